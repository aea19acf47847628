// Everything a C++ program needs to prune its own network with IMP / SWAMP:
//   swamp/engine.h         Config, run_imp, RunRequest, RunPlan, RunParts, Hooks, results
//   swamp/round_record.h   the round record (RoundResult) and its field list
//   swamp/module_source.h  your own torch::nn::Module as the model (module_source)
//   swamp/model_source.h   the model seam (ModelSource) and the zoo (ZooModelSource)
//   swamp/batch_source.h   the data seam (BatchSource) and in-memory tensors (TensorBatchSource)
//   swamp/data.h           Dataset, normalisation, batch orders
//   swamp/averaging.h      the averaging seam (ParticleAverager), SWA, batch-norm recompute
//   swamp/processes.h      the processes seam (Processes, ProcessLayout); distributed.h: over
//                          torch.distributed (DistributedProcesses)
//   swamp/safetensors.h    reading and writing .safetensors files (weights, masks, data)
//   swamp/pruning.h        global magnitude pruning on its own
//   swamp/inference.h      sparse inference: the swamp:: operators, a compressed model file run
// See docs/cpp.md for a complete program.
#pragma once

#include "swamp/analysis.h"
#include "swamp/averaging.h"
#include "swamp/batch_source.h"
#include "swamp/checkpoint.h"
#include "swamp/data.h"
#include "swamp/distributed.h"
#include "swamp/engine.h"
#include "swamp/inference.h"
#include "swamp/model_source.h"
#include "swamp/models.h"
#include "swamp/module_source.h"
#include "swamp/processes.h"
#include "swamp/pruning.h"
#include "swamp/round_record.h"
#include "swamp/safetensors.h"
#include "swamp/version.h"

// Analyses of what pruning found (the SWAMP paper's arguments): linear mode connectivity and
// loss barriers between two solutions, flatness (the Hessian trace by Hutchinson's estimator),
// predictions of several models and their ensemble (the imp_ensemble baseline) and mask
// overlap between runs. Models come from a run's ModelSource (null: the zoo model
// config.model) and data from its BatchSource, as in run_imp: give a source without
// augmentation (training-set figures read training batches through it, in storage order).
// A state is a model's state dict (parameters and buffers by name, as RoundModels gives them);
// states are copied onto the data source's device.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "swamp/engine.h"
#include "swamp/export.h"

namespace swamp {

using State = std::map<std::string, at::Tensor>;

// ---- linear mode connectivity ---------------------------------------------------------------
struct PathOptions {
  int64_t points = 11;        // alpha = 0, 1 / (points - 1), ..., 1 (points >= 2)
  bool recompute_bn = false;  // batch-norm statistics recomputed at each point (else
                              // interpolated with the weights, "raw")
  bool train = true;          // figures on the training set (storage order, no augmentation)
  bool test = true;           // figures on the test set
  int64_t train_samples = 0;  // the first this many training samples (0: all)
};

struct PathPoint {
  double alpha = 0.0;                        // the point (1 - alpha) * a + alpha * b
  double train_loss = 0.0, train_acc = 0.0;  // NaN where not asked for
  double test_loss = 0.0, test_acc = 0.0;
};

struct LinearPath {
  std::vector<PathPoint> points;
  // The barrier: the largest excess over the path of the loss (or error = 1 - accuracy) above
  // the straight line between its values at the two ends (>= 0; 0: linearly connected).
  double train_loss_barrier = 0.0, train_error_barrier = 0.0;
  double test_loss_barrier = 0.0, test_error_barrier = 0.0;
};

// Loss and accuracy of the models (1 - alpha) * a + alpha * b (every floating-point parameter
// and buffer; integer buffers from a). a and b must hold the model's parameters and buffers
// (names and shapes; c10::ValueError naming a difference).
SWAMP_API LinearPath linear_path(const Config& cfg, const RunParts& parts, const State& a,
                                 const State& b, const PathOptions& options = {});

// ---- flatness -------------------------------------------------------------------------------
struct TraceOptions {
  int64_t train_samples = 1000;  // the loss is the mean training loss over the first this many
                                 // training samples (0: all), in eval mode
  int64_t min_samples = 10;      // Rademacher vectors drawn at least ...
  int64_t max_samples = 200;     // ... and at most
  double tolerance = 0.05;       // stop once the standard error <= tolerance * |trace|
  int64_t block = 10;            // vectors per pass over the data (each pass builds the
                                 // gradient graph once and differentiates it `block` times)
  uint64_t seed = 0;             // the vectors' generator
};

struct HessianTrace {
  double trace = 0.0;      // mean of v^T H v over the vectors drawn
  double std_error = 0.0;  // standard error of that mean
  int64_t samples = 0;     // vectors drawn
  bool converged = false;  // the tolerance was reached before max_samples
  int64_t dimension = 0;   // parameters the Hessian is over (unpruned weights and the rest)
};

// Hutchinson's estimator of tr(H), H the Hessian of the training loss with respect to the
// unpruned parameters (`masks`: bool masks by parameter name, pruned entries excluded; empty:
// every parameter), E[v^T H v] over Rademacher vectors v, H v by double backpropagation.
SWAMP_API HessianTrace hessian_trace(const Config& cfg, const RunParts& parts, const State& state,
                                     const State& masks, const TraceOptions& options = {});

// ---- predictions ----------------------------------------------------------------------------
struct Scores {
  double acc = 0.0, nll = 0.0, ece = 0.0;  // test accuracy, NLL, ECE (15 bins)
};
struct EnsembleScores {
  std::vector<Scores> members;  // each model's
  Scores ensemble;              // the mean of their predicted probabilities
};

// The test figures of each state and of their prediction ensemble (the imp_ensemble baseline:
// the round-k models of independent IMP runs).
SWAMP_API EnsembleScores ensemble_scores(const Config& cfg, const RunParts& parts,
                                         const std::vector<State>& states);

// ---- masks ----------------------------------------------------------------------------------

// Intersection over union of the kept weights of two masks.
struct Overlap {
  int64_t kept_a = 0, kept_b = 0;     // unpruned entries of each mask
  int64_t intersection = 0, uni = 0;  // kept by both, kept by either
  int64_t total = 0;                  // entries
  double iou() const { return uni == 0 ? 1.0 : static_cast<double>(intersection) / uni; }
};

// Per parameter and over all of them ("" key): two runs' masks of the same parameters (bool,
// same names and shapes; a difference is a c10::ValueError naming it).
SWAMP_API std::map<std::string, Overlap> mask_overlap(const std::map<std::string, at::Tensor>& a,
                                                      const std::map<std::string, at::Tensor>& b);

}  // namespace swamp

// The record of one round, every field once. The C++ struct (RoundResult), its Python binding and
// the Python RoundRecord (swamp_ext.results), the stub, results.json, the checkpoint's round text
// and the strict readers of both are generated from SWAMP_ROUND_FIELDS or checked against it.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "swamp/export.h"

namespace swamp {

// The kinds of field, and their C++ types:
//   count            int64_t
//   figure           double
//   optional_figure  double; NaN where it was not computed (JSON null, Python None)
//   per_particle     std::vector<double>, one per particle (empty without diagnostics)
//   per_layer        (layer name, value) pairs in the model's order
#define SWAMP_ROUND_TYPE_count int64_t
#define SWAMP_ROUND_TYPE_figure double
#define SWAMP_ROUND_TYPE_optional_figure double
#define SWAMP_ROUND_TYPE_per_particle std::vector<double>
#define SWAMP_ROUND_TYPE_per_layer std::vector<std::pair<std::string, double>>

constexpr double kRoundInf = std::numeric_limits<double>::infinity();

// X(kind, name, default, lo, hi, required, doc): `lo` / `hi` bound every value of the field (the
// strict readers check them; relations between fields are checked there by hand); `required`:
// false for fields a record written by an earlier swamp_ext lacks (it reads as `default`, an
// optional_figure as NaN). The order is the order of results.json and of Python's RoundRecord.
#define SWAMP_ROUND_FIELDS(X)                                                                   \
  X(count, round, 0, 0, 1e9, true, "the round's index, from 0")                                 \
  X(count, particles, 1, 1, 1e5, true, "particles trained in the round")                        \
  X(figure, sparsity, 0.0, 0, 1, true, "exact, over the weights eligible for pruning")          \
  X(figure, sparsity_all, 0.0, 0, 1, true, "over all conv / linear weights (incl. dense ones)") \
  X(count, remaining, 0, 0, 1125899906842624.0, true, "unpruned eligible weights")              \
  X(count, prunable, 0, 0, 1125899906842624.0, true, "eligible weights")                        \
  X(figure, test_acc, 0.0, 0, 1, true, "test accuracy of the round's final (averaged) model")   \
  X(figure, test_nll, 0.0, 0, kRoundInf, true, "test negative log-likelihood of that model")    \
  X(optional_figure, ensemble_acc, 0.0, 0, 1, true,                                             \
    "test accuracy of the particles' prediction ensemble (None: diagnostics off)")              \
  X(optional_figure, ensemble_nll, 0.0, 0, kRoundInf, true,                                     \
    "test NLL of the particles' prediction ensemble (None: diagnostics off)")                   \
  X(per_particle, particle_acc, {}, 0, 1, true,                                                 \
    "each particle's test accuracy (empty: diagnostics off)")                                   \
  X(per_particle, particle_nll, {}, 0, kRoundInf, true,                                         \
    "each particle's test NLL (empty: diagnostics off)")                                        \
  X(per_layer, layer_density, {}, 0, 1, true, "each prunable layer's density after the round")  \
  X(figure, train_loss, 0.0, -kRoundInf, kRoundInf, true,                                       \
    "mean training loss over the particles' last epoch")                                        \
  X(figure, seconds, 0.0, 0, kRoundInf, true, "wall-clock seconds of the round")                \
  X(optional_figure, test_ece, 0.0, 0, 1, false,                                                \
    "expected calibration error (15 equal-width bins) of the final model")                      \
  X(optional_figure, ensemble_ece, 0.0, 0, 1, false,                                            \
    "expected calibration error of the particles' ensemble")                                    \
  X(count, skipped_steps, 0, 0, 4611686018427387904.0, false,                                   \
    "fp16: particle steps skipped because their gradients overflowed")                          \
  X(count, processes, 1, 1, 1073741824.0, false, "processes of the run in this round")          \
  X(count, processes_per_particle, 1, 1, 1073741824.0, false,                                   \
    "processes that trained each particle together (data parallel; 1: whole particles)")

struct RoundResult {
#define SWAMP_ROUND_MEMBER(kind, name, init, lo, hi, required, doc) \
  SWAMP_ROUND_TYPE_##kind name = init;
  SWAMP_ROUND_FIELDS(SWAMP_ROUND_MEMBER)
#undef SWAMP_ROUND_MEMBER
};

// One field of the list, as data (for bindings and readers that are not C++).
struct RoundField {
  std::string kind;  // count | figure | optional_figure | per_particle | per_layer
  std::string name;
  double lo = 0.0, hi = 0.0;
  bool required = true;
  std::string doc;
};

// SWAMP_ROUND_FIELDS as data, in order.
SWAMP_API const std::vector<RoundField>& round_fields();

}  // namespace swamp

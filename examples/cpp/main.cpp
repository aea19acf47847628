// Uses the swamp_core C++ API directly: exact global magnitude pruning of a few tensors.
// Exits non-zero when a check fails, so it doubles as a C++ test.
#include <swamp/pruning.h>
#include <swamp/version.h>
#include <torch/torch.h>

#include <cstdio>
#include <vector>

static int failures = 0;
#define EXPECT(cond)                                                         \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      ++failures;                                                            \
    }                                                                        \
  } while (0)

static int64_t count_true(const std::vector<torch::Tensor>& masks) {
  int64_t n = 0;
  for (const auto& m : masks) n += m.sum().item<int64_t>();
  return n;
}

int main() {
  std::printf("swamp_core %s (built with torch %s)\n", swamp::version().c_str(),
              swamp::built_with_torch_version().c_str());
  torch::manual_seed(0);
  std::vector<torch::Tensor> weights = {torch::randn({300, 784}), torch::randn({100, 300}),
                                        torch::randn({10, 100})};
  int64_t total = 0;
  for (const auto& w : weights) total += w.numel();

  std::vector<torch::Tensor> masks;  // empty: everything unpruned
  int64_t remaining = total;
  for (int round = 1; round <= 5; ++round) {
    swamp::PruneStats stats;
    masks = swamp::global_magnitude_prune(weights, masks, 0.2, swamp::PruneBackend::Auto, &stats);
    EXPECT(stats.remaining_before == remaining);
    EXPECT(stats.pruned == swamp::prune_count(0.2, remaining));
    remaining -= stats.pruned;
    EXPECT(count_true(masks) == remaining);
    std::printf("round %d: kept %lld of %lld (sparsity %.4f), threshold %.5f\n", round,
                static_cast<long long>(remaining), static_cast<long long>(total),
                1.0 - static_cast<double>(remaining) / static_cast<double>(total), stats.threshold);
  }

  // The ATen path (used on GPUs) agrees with the native CPU kernel.
  auto a = swamp::global_magnitude_prune(weights, masks, 0.3, swamp::PruneBackend::Native);
  auto b = swamp::global_magnitude_prune(weights, masks, 0.3, swamp::PruneBackend::ATen);
  for (size_t i = 0; i < a.size(); ++i) EXPECT(torch::equal(a[i], b[i]));

  // Bad input is a c10::ValueError, not a crash.
  bool threw = false;
  try {
    swamp::global_magnitude_prune(weights, masks, 1.5);
  } catch (const c10::ValueError&) {
    threw = true;
  }
  EXPECT(threw);

  if (failures == 0) std::printf("all checks passed\n");
  return failures == 0 ? 0 : 1;
}

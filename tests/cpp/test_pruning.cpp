// Global magnitude pruning against references written here: sorting |w| with the position as the
// tie-break, and counting.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "swamp/pruning.h"
#include "unit.h"

namespace {
// The masks that remove the k smallest |w| among the unpruned entries, ties broken by position
// (tensor order, then flat index), by sorting every entry.
std::vector<at::Tensor> sorted_reference(const std::vector<at::Tensor>& w,
                                         const std::vector<at::Tensor>& m, int64_t k) {
  std::vector<std::tuple<float, size_t, int64_t>> entries;  // |w|, tensor, index
  std::vector<at::Tensor> out;
  for (size_t t = 0; t < w.size(); ++t) {
    out.push_back(m[t].clone());
    auto wa = w[t].contiguous().view(-1);
    auto ma = m[t].contiguous().view(-1);
    for (int64_t i = 0; i < wa.numel(); ++i)
      if (ma[i].item<bool>()) entries.emplace_back(std::fabs(wa[i].item<float>()), t, i);
  }
  std::sort(entries.begin(), entries.end());
  for (int64_t j = 0; j < k; ++j) {
    const auto& e = entries[static_cast<size_t>(j)];
    out[std::get<1>(e)].view(-1)[std::get<2>(e)] = false;
  }
  return out;
}
}  // namespace

UNIT_TEST(global_pruning_removes_the_smallest_magnitudes_across_tensors) {
  const auto a = at::tensor({0.5f, -0.1f, 3.0f, -0.2f});
  const auto b = at::tensor({-2.0f, 0.05f, 1.0f, 0.3f});
  const auto masks = swamp::global_magnitude_prune({a, b}, {}, 0.5);
  // the four smallest |w| of the eight: 0.05 (b1), 0.1 (a1), 0.2 (a3), 0.3 (b3)
  EXPECT(at::equal(masks[0], unit::bools({1, 0, 1, 0})));
  EXPECT(at::equal(masks[1], unit::bools({1, 0, 1, 0})));
}

UNIT_TEST(ties_are_broken_by_position) {
  const auto a = at::ones({3});
  const auto b = at::ones({3});
  const auto masks = swamp::global_magnitude_prune({a, b}, {}, 0.5);
  EXPECT(at::equal(masks[0], unit::bools({0, 0, 0})));
  EXPECT(at::equal(masks[1], unit::bools({1, 1, 1})));
}

UNIT_TEST(pruned_entries_stay_pruned_and_the_count_follows_the_remaining) {
  const auto w = at::tensor({0.1f, 0.2f, 0.3f, 0.4f, 0.5f});
  const auto m = unit::bools({0, 1, 1, 1, 1});  // 0.1 pruned already
  swamp::PruneStats st;
  const auto masks = swamp::global_magnitude_prune({w}, {m}, 0.5, swamp::PruneBackend::Auto, &st);
  // 4 remaining, half of them go: 0.2 and 0.3
  EXPECT(at::equal(masks[0], unit::bools({0, 0, 0, 1, 1})));
  EXPECT(st.remaining_before == 4 && st.pruned == 2);
  EXPECT(std::fabs(st.threshold - 0.3) < 1e-6);
}

UNIT_TEST(random_tensors_match_the_sorted_reference_on_both_backends) {
  for (uint64_t seed : {1, 2, 3}) {
    at::manual_seed(seed);
    std::vector<at::Tensor> w = {at::randn({7, 5}), at::randn({13}), at::randn({3, 2, 2})};
    // a few exact ties among the magnitudes
    w[1][4] = w[0][2][1].neg();
    std::vector<at::Tensor> m;
    for (const auto& t : w) m.push_back(at::rand(t.sizes()) > 0.2);
    int64_t remaining = 0;
    for (const auto& t : m) remaining += t.sum().item<int64_t>();
    const double ratio = 0.37;
    const int64_t k =
        static_cast<int64_t>(std::floor(ratio * static_cast<double>(remaining) + 0.5));
    const auto want = sorted_reference(w, m, k);
    for (auto backend : {swamp::PruneBackend::Native, swamp::PruneBackend::ATen}) {
      const auto got = swamp::global_magnitude_prune(w, m, ratio, backend);
      for (size_t t = 0; t < w.size(); ++t) EXPECT(at::equal(got[t], want[t]));
    }
  }
}

UNIT_TEST(the_rounding_rule_of_the_count) {
  EXPECT(swamp::prune_count(0.2, 10) == 2);
  EXPECT(swamp::prune_count(0.25, 2) == 1);  // 0.5 rounds up
  EXPECT(swamp::prune_count(0.2, 2) == 0);   // 0.4 rounds down
  EXPECT(swamp::prune_count(0.5, 0) == 0);
}

UNIT_TEST(bad_input_is_refused_and_leaves_the_masks_alone) {
  const auto w = at::tensor({0.1f, 0.2f});
  const auto m = unit::bools({1, 1});
  EXPECT_THROWS(c10::ValueError, swamp::global_magnitude_prune_({w}, {m}, 1.5));
  EXPECT(at::equal(m, unit::bools({1, 1})));
  EXPECT_THROWS(c10::Error, swamp::global_magnitude_prune({w}, {unit::bools({1})}, 0.5));
}

// N:M structured pruning (Config.pruning "N:M"): in every group of m consecutive weights along a
// layer's rows keep the largest |w| (swamp/pruning.h).
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <string>

#include "swamp/pruning.h"

namespace swamp {

std::optional<NMPattern> parse_nm(const std::string& pruning) {
  const size_t colon = pruning.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == pruning.size()) return std::nullopt;
  auto digits = [](const std::string& t) {
    return !t.empty() && t.size() <= 9 &&
           std::all_of(t.begin(), t.end(), [](unsigned char c) { return std::isdigit(c); });
  };
  const std::string a = pruning.substr(0, colon), b = pruning.substr(colon + 1);
  if (!digits(a) || !digits(b)) return std::nullopt;
  NMPattern p{std::stoll(a), std::stoll(b)};
  TORCH_CHECK_VALUE(p.m >= 2 && p.m <= 256 && p.n >= 1 && p.n < p.m, "Config.pruning '", pruning,
                    "': an N:M pattern needs 1 <= N < M <= 256 (e.g. 2:4), got N = ", p.n,
                    ", M = ", p.m);
  return p;
}

bool nm_fits(const at::Tensor& weight, int64_t m) {
  if (weight.dim() < 2 || weight.size(0) == 0) return false;
  const int64_t cols = weight.numel() / weight.size(0);
  return cols > 0 && cols % m == 0;
}

int64_t nm_keep_after(const NMPattern& p, int64_t round) {
  TORCH_CHECK_VALUE(round >= 0, "nm_keep_after: round must be >= 0, got ", round);
  return std::max(p.n, p.m - round);
}

PruneStats nm_prune_(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& masks,
                     int64_t keep, int64_t m) {
  TORCH_CHECK_VALUE(masks.size() == weights.size(), "nm_prune_: needs one mask per weight");
  TORCH_CHECK_VALUE(m >= 1 && keep >= 0 && keep <= m, "nm_prune_: keep must be in [0, ", m,
                    "], got ", keep);
  PruneStats stats;
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    at::Tensor mask = masks[i];
    TORCH_CHECK_VALUE(
        mask.scalar_type() == at::kBool && mask.sizes() == w.sizes() && mask.is_contiguous(),
        "nm_prune_: masks[", i,
        "] must be a contiguous bool tensor shaped like its "
        "weight");
    const int64_t before = mask.sum().item<int64_t>();
    stats.remaining_before += before;
    if (!nm_fits(w, m)) continue;
    const int64_t groups = w.numel() / m;
    // score: |w| where unpruned, -1 where pruned (never chosen over an unpruned entry); a stable
    // descending sort keeps the lower position first among equal scores
    const at::Tensor score =
        at::where(mask, w.detach().abs().to(at::kFloat), -1.0f).reshape({groups, m});
    const at::Tensor order =
        std::get<1>(score.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
    at::Tensor chosen = at::zeros({groups, m}, mask.options());
    chosen.scatter_(1, order.narrow(1, 0, keep), at::ones({groups, keep}, mask.options()));
    mask.logical_and_(chosen.view(mask.sizes()));
    stats.pruned += before - mask.sum().item<int64_t>();
  }
  stats.threshold = 0.0;  // not one magnitude threshold
  return stats;
}

}  // namespace swamp

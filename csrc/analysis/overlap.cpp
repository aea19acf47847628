#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include "swamp/analysis.h"

namespace swamp {

std::map<std::string, Overlap> mask_overlap(const std::map<std::string, at::Tensor>& a,
                                            const std::map<std::string, at::Tensor>& b) {
  TORCH_CHECK_VALUE(!a.empty(), "mask_overlap: no masks");
  for (const auto& kv : b)
    TORCH_CHECK_VALUE(a.count(kv.first) != 0, "mask_overlap: '", kv.first,
                      "' is masked in the second run only");
  std::map<std::string, Overlap> out;
  Overlap all;
  for (const auto& kv : a) {
    auto it = b.find(kv.first);
    TORCH_CHECK_VALUE(it != b.end(), "mask_overlap: '", kv.first,
                      "' is masked in the first run only");
    const at::Tensor &x = kv.second, &y = it->second;
    TORCH_CHECK_VALUE(x.scalar_type() == at::kBool && y.scalar_type() == at::kBool,
                      "mask_overlap: '", kv.first, "' masks must be bool, got ", x.scalar_type(),
                      " and ", y.scalar_type());
    TORCH_CHECK_VALUE(x.sizes() == y.sizes(), "mask_overlap: '", kv.first, "' has shape ",
                      x.sizes(), " in the first run and ", y.sizes(), " in the second");
    Overlap o;
    o.total = x.numel();
    o.kept_a = x.sum().item<int64_t>();
    o.kept_b = y.sum().item<int64_t>();
    o.intersection = at::logical_and(x, y.to(x.device())).sum().item<int64_t>();
    o.uni = o.kept_a + o.kept_b - o.intersection;
    all.total += o.total;
    all.kept_a += o.kept_a;
    all.kept_b += o.kept_b;
    all.intersection += o.intersection;
    all.uni += o.uni;
    out[kv.first] = o;
  }
  out[""] = all;
  return out;
}

}  // namespace swamp

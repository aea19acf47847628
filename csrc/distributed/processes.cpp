// The one-process defaults of the processes seam (swamp/processes.h) and the layout rule.
#include "swamp/processes.h"

#include <c10/util/Exception.h>

namespace swamp {

std::vector<at::Tensor> Processes::gather(const std::vector<at::Tensor>& local, int64_t n) {
  TORCH_CHECK_VALUE(static_cast<int64_t>(local.size()) == n, "gather: ", local.size(),
                    " particles here, expected all ", n);
  return local;
}

std::vector<std::vector<int64_t>> data_parallel_groups(int64_t world, int64_t n) {
  TORCH_CHECK_VALUE(world >= 1 && n >= 1, "data_parallel_groups: ", world, " processes, ", n,
                    " particles");
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(n));
  if (n >= world) {
    for (int64_t r = 0; r < world; ++r)
      for (int64_t p = r * n / world; p < (r + 1) * n / world; ++p) out[p] = {r};
    return out;
  }
  const int64_t g = world / n;
  for (int64_t p = 0; p < n; ++p)
    for (int64_t r = p * g; r < (p + 1) * g; ++r) out[p].push_back(r);
  return out;
}

}  // namespace swamp

// DistributedProcesses: which particles a process trains, and the all-gathers that give every
// process all particles of a round (see swamp/distributed.h).
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "swamp/distributed.h"

namespace swamp {
namespace {

constexpr int64_t kMaxDims = 8;

// What one process holds for a gather: its particle count, then dtype and shape of its tensors.
at::Tensor header(const std::vector<at::Tensor>& local) {
  at::Tensor h = at::full({3 + kMaxDims}, -1, at::kLong);
  auto* v = h.mutable_data_ptr<int64_t>();
  v[0] = static_cast<int64_t>(local.size());
  if (local.empty()) return h;
  const at::Tensor& t = local[0];
  TORCH_CHECK_VALUE(t.dim() <= kMaxDims, "distributed run: tensors of up to ", kMaxDims,
                    " dimensions are gathered, got ", t.dim());
  v[1] = static_cast<int64_t>(t.scalar_type());
  v[2] = t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) v[3 + d] = t.size(d);
  for (const auto& u : local)
    TORCH_CHECK(u.scalar_type() == t.scalar_type() && u.sizes() == t.sizes(),
                "distributed run: this process's particles hold tensors of different shapes ",
                t.sizes(), " and ", u.sizes());
  return h;
}

std::string text_of(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string s;
  for (const auto& kv : fields) s += kv.first + "=" + kv.second + "\n";
  return s;
}

std::map<std::string, std::string> fields_of(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = text.find('\n', at);
    const std::string line = text.substr(at, end - at);
    const size_t eq = line.find('=');
    out[line.substr(0, eq)] = eq == std::string::npos ? "" : line.substr(eq + 1);
    at = end == std::string::npos ? text.size() : end + 1;
  }
  return out;
}

}  // namespace

DistributedProcesses::DistributedProcesses(std::shared_ptr<Collectives> collectives,
                                           bool data_parallel)
    : c_(std::move(collectives)), data_parallel_(data_parallel) {
  TORCH_CHECK_VALUE(c_ != nullptr, "DistributedProcesses: no collectives");
  TORCH_CHECK_VALUE(c_->size() >= 1 && c_->rank() >= 0 && c_->rank() < c_->size(),
                    "DistributedProcesses: rank ", c_->rank(), " of ", c_->size());
}

ProcessLayout DistributedProcesses::layout_of(int64_t rank, int64_t n) const {
  TORCH_CHECK_VALUE(n >= 1, "distributed run: a round of ", n, " particles");
  const int64_t world = c_->size();
  if (n >= world) return ProcessLayout{world, 1, rank * n / world, (rank + 1) * n / world, 0};
  if (!data_parallel_)  // one process per particle, the others sit the round out
    return rank < n ? ProcessLayout{world, 1, rank, rank + 1, 0} : ProcessLayout{world, 1, n, n, 0};
  const int64_t g = world / n;  // as data_parallel_groups
  const int64_t p = rank / g;
  if (p >= n) return ProcessLayout{world, g, n, n, 0};  // left over: sits the round out
  return ProcessLayout{world, g, p, p + 1, rank % g};
}

ProcessLayout DistributedProcesses::layout(int64_t n) const { return layout_of(c_->rank(), n); }

Collectives* DistributedProcesses::group_of(int64_t n) {
  const ProcessLayout l = layout(n);
  if (l.per_particle == 1 || l.first == l.last) return nullptr;
  if (l.per_particle == c_->size()) return c_.get();  // one particle trained by every process
  std::vector<int64_t> ranks;
  for (int64_t r = l.first * l.per_particle; r < (l.first + 1) * l.per_particle; ++r)
    ranks.push_back(r);
  auto it = groups_.find(ranks);
  if (it == groups_.end()) it = groups_.emplace(ranks, c_->subgroup(ranks)).first;
  return it->second.get();
}

void DistributedProcesses::sum_in_group(int64_t n, std::vector<at::Tensor>& tensors) {
  if (Collectives* g = group_of(n)) g->all_reduce_sum(tensors);
}

PendingSum DistributedProcesses::start_sum_in_group(int64_t n, const at::Tensor& flat) {
  if (Collectives* g = group_of(n)) return g->start_all_reduce_sum(flat);
  return PendingSum();
}

void DistributedProcesses::sum_over_all(std::vector<at::Tensor>& tensors) {
  if (c_->size() > 1) c_->all_reduce_sum(tensors);
}

std::vector<at::Tensor> DistributedProcesses::gather(const std::vector<at::Tensor>& local,
                                                     int64_t n) {
  torch::NoGradGuard no_grad;
  const auto [first, last] = layout(n).contributes();
  TORCH_CHECK_VALUE(static_cast<int64_t>(local.size()) == last - first, "gather: ", local.size(),
                    " particles given, this process contributes ", last - first, " of ", n);
  // every process's count, dtype and shape (a process holding no particle learns them here)
  const std::vector<at::Tensor> heads = c_->all_gather(header(local));
  const int64_t* like = nullptr;
  for (int64_t r = 0; r < c_->size(); ++r) {
    const int64_t* h = heads[r].const_data_ptr<int64_t>();
    const auto [f, l] = layout_of(r, n).contributes();
    TORCH_CHECK(h[0] == l - f, "distributed run: rank ", r, " holds ", h[0],
                " particles of this round where ", l - f, " were expected (different configs?)");
    if (h[0] == 0) continue;
    if (like == nullptr) {
      like = h;
      continue;
    }
    TORCH_CHECK(std::equal(h + 1, h + 3 + h[2], like + 1), "distributed run: rank ", r,
                " holds tensors of another dtype or shape than the processes before it (different "
                "models?)");
  }
  TORCH_CHECK(like != nullptr, "distributed run: no process holds a particle of this round");
  const auto dtype = static_cast<at::ScalarType>(like[1]);
  std::vector<int64_t> shape(like + 3, like + 3 + like[2]);
  const at::Device dev = local.empty() ? at::Device(at::kCPU) : local[0].device();
  // this process's particles, padded to the largest share
  const int64_t most = (n + c_->size() - 1) / c_->size();  // 1 with more processes than particles
  std::vector<int64_t> padded_shape{most};
  padded_shape.insert(padded_shape.end(), shape.begin(), shape.end());
  at::Tensor mine = at::zeros(padded_shape, at::TensorOptions().dtype(dtype).device(dev));
  for (size_t i = 0; i < local.size(); ++i) mine.select(0, static_cast<int64_t>(i)).copy_(local[i]);
  const std::vector<at::Tensor> all = c_->all_gather(mine);
  std::vector<at::Tensor> out;
  for (int64_t r = 0; r < c_->size(); ++r) {
    const auto [f, l] = layout_of(r, n).contributes();
    for (int64_t i = 0; i < l - f; ++i) out.push_back(all[r].select(0, i));
  }
  return out;
}

void DistributedProcesses::agree(const std::string& what,
                                 const std::vector<std::pair<std::string, std::string>>& fields) {
  const std::string text = text_of(fields);
  const at::Tensor len = at::full({1}, static_cast<int64_t>(text.size()), at::kLong);
  int64_t most = 0;
  for (const auto& l : c_->all_gather(len)) most = std::max(most, l.item<int64_t>());
  at::Tensor bytes = at::zeros({most}, at::kByte);
  std::copy(text.begin(), text.end(), bytes.mutable_data_ptr<uint8_t>());
  const std::vector<at::Tensor> all = c_->all_gather(bytes);
  std::vector<std::string> texts;
  for (const auto& t : all) {
    const auto* p = reinterpret_cast<const char*>(t.const_data_ptr<uint8_t>());
    texts.emplace_back(p, strnlen(p, static_cast<size_t>(most)));
  }
  // every process finds the same first difference against rank 0, and raises the same error
  const auto ref = fields_of(texts[0]);
  for (size_t r = 1; r < texts.size(); ++r) {
    if (texts[r] == texts[0]) continue;
    const auto other = fields_of(texts[r]);
    for (const auto& kv : ref) {
      auto it = other.find(kv.first);
      TORCH_CHECK_VALUE(it != other.end(), "distributed run: the processes disagree on the ", what,
                        ": rank ", r, " has no '", kv.first, "' (rank 0: ", kv.first, "=",
                        kv.second, ")");
      TORCH_CHECK_VALUE(it->second == kv.second, "distributed run: the processes disagree on the ",
                        what, ": rank ", r, " has ", kv.first, "=", it->second, ", rank 0 has ",
                        kv.first, "=", kv.second, "; every process must be given the same");
    }
    TORCH_CHECK_VALUE(false, "distributed run: the processes disagree on the ", what, ": rank ", r,
                      " has fields rank 0 does not");
  }
}

}  // namespace swamp

// Exact global magnitude pruning by radix select over the float bits of |w|.
//
// Pass L (L = 0 .. levels-1) builds a 65536-bin histogram of the L-th 16-bit digit (most
// significant first) of the keys of the unpruned entries whose higher digits equal the prefix
// chosen so far. After the last pass the key T of the k-th smallest entry is known exactly,
// together with how many entries equal to T must go (r). A final pass writes the masks: key < T
// pruned, key > T kept, key == T pruned for the first r of them in (tensor, flat index) order.
//
// Keys are 32-bit (|w| as float) unless a float64 tensor is present, then 64-bit (|w| as double);
// both conversions are exact for the supported dtypes, so the order is the order of |w|.
#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>

#include "swamp/pruning.h"

namespace swamp {
namespace {

constexpr int kDigitBits = 16;
constexpr int64_t kBins = int64_t{1} << kDigitBits;
constexpr int64_t kDigitMask = kBins - 1;
constexpr int64_t kGrain = int64_t{1} << 17;        // elements per parallel task (at least)
constexpr int64_t kChunk = int64_t{1} << 24;        // elements per chunk in the ATen path
constexpr int64_t kSerialBelow = int64_t{1} << 18;  // small tensors go to the shared histogram

template <typename KeyT>
struct KeyTraits;
template <>
struct KeyTraits<uint32_t> {
  using Float = float;
  static constexpr uint32_t kInf = 0x7F800000u;
  static constexpr int kBits = 32;
};
template <>
struct KeyTraits<uint64_t> {
  using Float = double;
  static constexpr uint64_t kInf = 0x7FF0000000000000ull;
  static constexpr int kBits = 64;
};

template <typename KeyT, typename scalar_t>
inline KeyT key_of(scalar_t v) {
  using F = typename KeyTraits<KeyT>::Float;
  F f = std::fabs(static_cast<F>(v));
  KeyT k;
  std::memcpy(&k, &f, sizeof(KeyT));
  return k;
}

struct Item {
  at::Tensor w;     // contiguous, flattened
  at::Tensor mask;  // contiguous bool, flattened; undefined = dense
  int64_t n = 0;
};

// What to select at one histogram level.
template <typename KeyT>
struct Level {
  int shift = 0;  // digit = (key >> shift) & 0xFFFF
  bool use_prefix = false;
  KeyT prefix = 0;  // required value of key >> (shift + 16)
};

// ----------------------------------------------------------------------------------------------
// Native CPU kernel
// ----------------------------------------------------------------------------------------------

template <typename KeyT>
void histogram_native(const std::vector<Item>& items, const Level<KeyT>& lv, bool check_nan,
                      std::vector<int64_t>& hist) {
  std::mutex mu;
  std::atomic<int64_t> nan_tensor{-1};
  for (size_t t = 0; t < items.size(); ++t) {
    const Item& it = items[t];
    const bool* m = it.mask.defined() ? it.mask.const_data_ptr<bool>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, it.w.scalar_type(), "swamp_hist", [&] {
          const scalar_t* w = it.w.const_data_ptr<scalar_t>();
          auto body = [&](int64_t b, int64_t e, int64_t* h) {
            bool nan = false;
            for (int64_t i = b; i < e; ++i) {
              if (m != nullptr && !m[i]) continue;
              const KeyT k = key_of<KeyT>(w[i]);
              if (check_nan) nan |= k > KeyTraits<KeyT>::kInf;
              if (lv.use_prefix && (k >> (lv.shift + kDigitBits)) != lv.prefix) continue;
              ++h[(k >> lv.shift) & kDigitMask];
            }
            if (nan) nan_tensor.store(static_cast<int64_t>(t));
          };
          if (it.n < kSerialBelow) {
            body(0, it.n, hist.data());
          } else {
            at::parallel_for(0, it.n, kGrain, [&](int64_t b, int64_t e) {
              std::vector<int64_t> local(kBins, 0);
              body(b, e, local.data());
              std::lock_guard<std::mutex> lock(mu);
              for (int64_t d = 0; d < kBins; ++d) hist[d] += local[d];
            });
          }
        });
  }
  TORCH_CHECK_VALUE(nan_tensor.load() < 0, "global_magnitude_prune: weights[", nan_tensor.load(),
                    "] contains NaN among its unpruned entries");
}

template <typename KeyT>
int64_t count_equal_native(const Item& it, KeyT target) {
  const bool* m = it.mask.defined() ? it.mask.const_data_ptr<bool>() : nullptr;
  int64_t total = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, it.w.scalar_type(), "swamp_count", [&] {
    const scalar_t* w = it.w.const_data_ptr<scalar_t>();
    total = at::parallel_reduce(
        0, it.n, kGrain, int64_t{0},
        [&](int64_t b, int64_t e, int64_t acc) {
          for (int64_t i = b; i < e; ++i)
            acc += ((m == nullptr || m[i]) && key_of<KeyT>(w[i]) == target) ? 1 : 0;
          return acc;
        },
        std::plus<int64_t>());
  });
  return total;
}

// Index just past the `need`-th (1-based) unpruned entry equal to target.
template <typename KeyT>
int64_t position_after_nth_equal_native(const Item& it, KeyT target, int64_t need) {
  const bool* m = it.mask.defined() ? it.mask.const_data_ptr<bool>() : nullptr;
  int64_t pos = it.n;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, it.w.scalar_type(), "swamp_pos", [&] {
    const scalar_t* w = it.w.const_data_ptr<scalar_t>();
    int64_t seen = 0;
    for (int64_t i = 0; i < it.n; ++i) {
      if ((m == nullptr || m[i]) && key_of<KeyT>(w[i]) == target && ++seen == need) {
        pos = i + 1;
        break;
      }
    }
  });
  return pos;
}

// out[i] = mask[i] && (key > T || (key == T && i >= tie_pos))
template <typename KeyT>
void write_mask_native(const Item& it, at::Tensor& out, KeyT target, int64_t tie_pos) {
  const bool* m = it.mask.defined() ? it.mask.const_data_ptr<bool>() : nullptr;
  bool* o = out.mutable_data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, it.w.scalar_type(), "swamp_mask", [&] {
    const scalar_t* w = it.w.const_data_ptr<scalar_t>();
    at::parallel_for(0, it.n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const KeyT k = key_of<KeyT>(w[i]);
        const bool alive = (m == nullptr || m[i]);
        o[i] = alive && (k > target || (k == target && i >= tie_pos));
      }
    });
  });
}

// ----------------------------------------------------------------------------------------------
// Chunked ATen path (any device)
// ----------------------------------------------------------------------------------------------

template <typename KeyT>
at::Tensor keys_aten(const at::Tensor& w) {
  using F = typename KeyTraits<KeyT>::Float;
  const auto ft = std::is_same_v<F, float> ? at::kFloat : at::kDouble;
  const auto it = std::is_same_v<F, float> ? at::kInt : at::kLong;
  return w.abs().to(ft).view(it);  // non-negative floats: the signed view orders like the value
}

template <typename KeyT>
void histogram_aten(const std::vector<Item>& items, const Level<KeyT>& lv, bool check_nan,
                    std::vector<int64_t>& hist) {
  if (items.empty()) return;
  at::Tensor acc = at::zeros({kBins}, items[0].w.options().dtype(at::kLong));
  for (size_t t = 0; t < items.size(); ++t) {
    const Item& it = items[t];
    for (int64_t s = 0; s < it.n; s += kChunk) {
      const int64_t len = std::min(kChunk, it.n - s);
      at::Tensor wc = it.w.narrow(0, s, len);
      if (check_nan) {
        at::Tensor bad = wc.isnan();
        if (it.mask.defined()) bad = bad.logical_and(it.mask.narrow(0, s, len));
        TORCH_CHECK_VALUE(!bad.any().item<bool>(), "global_magnitude_prune: weights[", t,
                          "] contains NaN among its unpruned entries");
      }
      at::Tensor k = keys_aten<KeyT>(wc);
      at::Tensor sel;
      if (it.mask.defined()) sel = it.mask.narrow(0, s, len);
      if (lv.use_prefix) {
        at::Tensor match = k.__rshift__(lv.shift + kDigitBits).eq(static_cast<int64_t>(lv.prefix));
        sel = sel.defined() ? sel.logical_and(match) : match;
      }
      at::Tensor digits = k.__rshift__(lv.shift).bitwise_and(kDigitMask);
      if (sel.defined()) digits = digits.masked_select(sel);
      if (digits.numel() > 0) acc.add_(at::bincount(digits.to(at::kLong), {}, kBins));
    }
  }
  at::Tensor h = acc.cpu();
  const int64_t* hp = h.const_data_ptr<int64_t>();
  for (int64_t d = 0; d < kBins; ++d) hist[d] += hp[d];
}

template <typename KeyT>
at::Tensor equal_aten(const Item& it, int64_t s, int64_t len, KeyT target) {
  at::Tensor eq = keys_aten<KeyT>(it.w.narrow(0, s, len)).eq(static_cast<int64_t>(target));
  if (it.mask.defined()) eq = eq.logical_and(it.mask.narrow(0, s, len));
  return eq;
}

template <typename KeyT>
int64_t count_equal_aten(const Item& it, KeyT target) {
  int64_t total = 0;
  for (int64_t s = 0; s < it.n; s += kChunk) {
    const int64_t len = std::min(kChunk, it.n - s);
    const at::Tensor eq = equal_aten<KeyT>(it, s, len, target);
    total += eq.sum().item<int64_t>();
  }
  return total;
}

template <typename KeyT>
int64_t position_after_nth_equal_aten(const Item& it, KeyT target, int64_t need) {
  int64_t seen = 0;
  for (int64_t s = 0; s < it.n; s += kChunk) {
    const int64_t len = std::min(kChunk, it.n - s);
    at::Tensor eq = equal_aten<KeyT>(it, s, len, target);
    const int64_t c = eq.sum().item<int64_t>();
    if (seen + c >= need) {
      at::Tensor hit = eq.cumsum(0).eq(need - seen).logical_and(eq).nonzero();
      return s + hit[0][0].item<int64_t>() + 1;
    }
    seen += c;
  }
  return it.n;
}

template <typename KeyT>
void write_mask_aten(const Item& it, at::Tensor& out, KeyT target, int64_t tie_pos) {
  for (int64_t s = 0; s < it.n; s += kChunk) {
    const int64_t len = std::min(kChunk, it.n - s);
    at::Tensor k = keys_aten<KeyT>(it.w.narrow(0, s, len));
    at::Tensor keep = k.gt(static_cast<int64_t>(target));
    if (tie_pos < s + len) {
      at::Tensor eq = k.eq(static_cast<int64_t>(target));
      if (tie_pos > s) {
        at::Tensor idx = at::arange(s, s + len, k.options().dtype(at::kLong));
        eq = eq.logical_and(idx.ge(tie_pos));
      }
      keep = keep.logical_or(eq);
    }
    if (it.mask.defined()) keep = keep.logical_and(it.mask.narrow(0, s, len));
    out.narrow(0, s, len).copy_(keep);
  }
}

// ----------------------------------------------------------------------------------------------
// Driver
// ----------------------------------------------------------------------------------------------

template <typename KeyT>
PruneStats select_and_write(const std::vector<Item>& items, std::vector<at::Tensor>& outs,
                            double ratio, bool native) {
  constexpr int levels = KeyTraits<KeyT>::kBits / kDigitBits;
  auto hist_pass = [&](const Level<KeyT>& lv, bool check_nan, std::vector<int64_t>& h) {
    native ? histogram_native<KeyT>(items, lv, check_nan, h)
           : histogram_aten<KeyT>(items, lv, check_nan, h);
  };

  PruneStats stats;
  std::vector<int64_t> hist(kBins, 0);
  Level<KeyT> lv;
  lv.shift = KeyTraits<KeyT>::kBits - kDigitBits;
  hist_pass(lv, /*check_nan=*/true, hist);
  int64_t remaining = 0;
  for (int64_t c : hist) remaining += c;
  stats.remaining_before = remaining;
  const int64_t k = prune_count(ratio, remaining);
  stats.pruned = k;

  KeyT target = 0;
  int64_t ties_to_prune = 0;
  if (k > 0) {
    int64_t k_left = k;  // rank (1-based) of the k-th smallest inside the current prefix
    KeyT prefix = 0;
    int64_t equal_total = 0;
    for (int level = 0; level < levels; ++level) {
      if (level > 0) {
        std::fill(hist.begin(), hist.end(), 0);
        lv.use_prefix = true;
        lv.prefix = prefix;
        lv.shift = KeyTraits<KeyT>::kBits - kDigitBits * (level + 1);
        hist_pass(lv, false, hist);
      }
      int64_t d = 0;
      for (; d < kBins; ++d) {
        if (hist[d] >= k_left) break;
        k_left -= hist[d];
      }
      TORCH_CHECK(d < kBins, "global_magnitude_prune: internal error, radix select overran");
      prefix = static_cast<KeyT>((prefix << kDigitBits) | static_cast<KeyT>(d));
      equal_total = hist[d];
    }
    target = prefix;
    ties_to_prune = k_left;  // 1 <= ties_to_prune <= equal_total
    (void)equal_total;
    using F = typename KeyTraits<KeyT>::Float;
    F f;
    std::memcpy(&f, &target, sizeof(KeyT));
    stats.threshold = static_cast<double>(f);
  }

  // Tie cut positions, tensor by tensor in order.
  for (size_t t = 0; t < items.size(); ++t) {
    const Item& it = items[t];
    int64_t tie_pos;  // entries equal to target at index < tie_pos are pruned
    if (k == 0) {
      // Keep everything that is alive: target 0 with tie_pos 0 keeps keys >= 0, i.e. all.
      tie_pos = 0;
    } else if (ties_to_prune == 0) {
      tie_pos = 0;
    } else {
      const int64_t here =
          native ? count_equal_native<KeyT>(it, target) : count_equal_aten<KeyT>(it, target);
      if (here <= ties_to_prune) {
        tie_pos = it.n;
        ties_to_prune -= here;
      } else {
        tie_pos = native ? position_after_nth_equal_native<KeyT>(it, target, ties_to_prune)
                         : position_after_nth_equal_aten<KeyT>(it, target, ties_to_prune);
        ties_to_prune = 0;
      }
    }
    native ? write_mask_native<KeyT>(it, outs[t], target, tie_pos)
           : write_mask_aten<KeyT>(it, outs[t], target, tie_pos);
  }
  return stats;
}

std::vector<Item> validate(const std::vector<at::Tensor>& weights,
                           const std::vector<at::Tensor>& masks, double ratio, bool* need_double) {
  TORCH_CHECK_VALUE(!weights.empty(), "global_magnitude_prune: `weights` is an empty list");
  TORCH_CHECK_VALUE(std::isfinite(ratio) && ratio >= 0.0 && ratio < 1.0,
                    "global_magnitude_prune: `ratio` must be in [0, 1), got ", ratio);
  TORCH_CHECK_VALUE(masks.empty() || masks.size() == weights.size(), "global_magnitude_prune: got ",
                    weights.size(), " weights but ", masks.size(), " masks");
  std::vector<Item> items;
  items.reserve(weights.size());
  *need_double = false;
  const c10::Device dev = weights[0].defined() ? weights[0].device() : c10::Device(c10::kCPU);
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK_VALUE(w.defined(), "global_magnitude_prune: weights[", i, "] is undefined");
    const auto st = w.scalar_type();
    TORCH_CHECK_TYPE(
        st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble,
        "global_magnitude_prune: weights[", i,
        "] must be float32, float16, bfloat16 or float64, got ", st);
    TORCH_CHECK_VALUE(w.device() == dev, "global_magnitude_prune: weights[", i, "] is on ",
                      w.device(), " but weights[0] is on ", dev);
    TORCH_CHECK_VALUE(w.layout() == at::kStrided, "global_magnitude_prune: weights[", i,
                      "] must be a dense (strided) tensor");
    if (st == at::kDouble) *need_double = true;
    Item it;
    it.w = w.detach().contiguous().view(-1);
    it.n = it.w.numel();
    if (!masks.empty()) {
      const at::Tensor& m = masks[i];
      TORCH_CHECK_VALUE(m.defined(), "global_magnitude_prune: masks[", i, "] is undefined");
      TORCH_CHECK_TYPE(m.scalar_type() == at::kBool, "global_magnitude_prune: masks[", i,
                       "] must be a bool tensor, got ", m.scalar_type());
      TORCH_CHECK_VALUE(m.sizes() == w.sizes(), "global_magnitude_prune: masks[", i, "] has shape ",
                        m.sizes(), " but weights[", i, "] has shape ", w.sizes());
      TORCH_CHECK_VALUE(m.device() == dev, "global_magnitude_prune: masks[", i, "] is on ",
                        m.device(), " but the weights are on ", dev);
      it.mask = m.detach().contiguous().view(-1);
    }
    items.push_back(std::move(it));
  }
  return items;
}

PruneStats run(const std::vector<Item>& items, std::vector<at::Tensor>& outs, double ratio,
               PruneBackend backend, bool need_double) {
  const bool cpu = items[0].w.device().is_cpu();
  TORCH_CHECK_VALUE(backend != PruneBackend::Native || cpu,
                    "global_magnitude_prune: the native backend runs on CPU tensors only");
  const bool native = backend == PruneBackend::Native || (backend == PruneBackend::Auto && cpu);
  return need_double ? select_and_write<uint64_t>(items, outs, ratio, native)
                     : select_and_write<uint32_t>(items, outs, ratio, native);
}

}  // namespace

int64_t prune_count(double ratio, int64_t remaining) {
  TORCH_CHECK_VALUE(std::isfinite(ratio) && ratio >= 0.0 && ratio <= 1.0,
                    "prune_count: ratio must be in [0, 1], got ", ratio);
  TORCH_CHECK_VALUE(remaining >= 0, "prune_count: remaining must be >= 0");
  const double k = std::floor(ratio * static_cast<double>(remaining) + 0.5);
  return std::min<int64_t>(remaining, static_cast<int64_t>(k));
}

std::vector<at::Tensor> global_magnitude_prune(const std::vector<at::Tensor>& weights,
                                               const std::vector<at::Tensor>& masks, double ratio,
                                               PruneBackend backend, PruneStats* stats) {
  bool need_double = false;
  std::vector<Item> items = validate(weights, masks, ratio, &need_double);
  std::vector<at::Tensor> outs;
  outs.reserve(items.size());
  for (const Item& it : items) outs.push_back(at::empty({it.n}, it.w.options().dtype(at::kBool)));
  const PruneStats s = run(items, outs, ratio, backend, need_double);
  if (stats != nullptr) *stats = s;
  for (size_t i = 0; i < outs.size(); ++i) outs[i] = outs[i].view(weights[i].sizes());
  return outs;
}

PruneStats global_magnitude_prune_(const std::vector<at::Tensor>& weights,
                                   const std::vector<at::Tensor>& masks, double ratio,
                                   PruneBackend backend) {
  TORCH_CHECK_VALUE(masks.size() == weights.size(),
                    "global_magnitude_prune_: needs one mask per weight tensor");
  for (size_t i = 0; i < masks.size(); ++i)
    TORCH_CHECK_VALUE(!masks[i].defined() || masks[i].is_contiguous(),
                      "global_magnitude_prune_: masks[", i,
                      "] must be contiguous to be updated in place");
  bool need_double = false;
  std::vector<Item> items = validate(weights, masks, ratio, &need_double);
  std::vector<at::Tensor> outs;
  outs.reserve(items.size());
  for (const Item& it : items) outs.push_back(it.mask);  // flattened views of the caller's masks
  return run(items, outs, ratio, backend, need_double);
}

}  // namespace swamp

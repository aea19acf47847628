// Linear mode connectivity: the figures of (1 - alpha) a + alpha b along the segment, and the
// barrier above the straight line between its ends.
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "subject.h"

namespace swamp {
namespace {

// max over the path of value(alpha) - ((1 - alpha) value(0) + alpha value(1))
template <typename Get>
double barrier(const std::vector<PathPoint>& pts, Get get) {
  const double v0 = get(pts.front()), v1 = get(pts.back());
  double worst = 0.0;
  for (const PathPoint& p : pts)
    worst = std::max(worst, get(p) - ((1.0 - p.alpha) * v0 + p.alpha * v1));
  return worst;
}

}  // namespace

LinearPath linear_path(const Config& cfg, const RunParts& parts, const State& a, const State& b,
                       const PathOptions& opt) {
  TORCH_CHECK_VALUE(opt.points >= 2, "linear_path: points must be >= 2, got ", opt.points);
  TORCH_CHECK_VALUE(opt.train || opt.test, "linear_path: neither train nor test figures asked for");
  analysis::Subject subject(cfg, parts);
  subject.load(a, "the first state");  // checks both states against the model
  subject.load(b, "the second state");
  const int64_t n_train = subject.train_count(opt.train_samples);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  LinearPath path;
  for (int64_t i = 0; i < opt.points; ++i) {
    const double alpha = static_cast<double>(i) / static_cast<double>(opt.points - 1);
    {
      torch::NoGradGuard no_grad;
      for (const auto& [name, t] : subject.entries()) {
        const at::Tensor& x = a.at(name);
        if (!t.is_floating_point()) {
          t.copy_(x);
          continue;
        }
        const at::Tensor y = b.at(name).to(t.device(), at::kDouble);
        t.copy_(x.to(t.device(), at::kDouble) * (1.0 - alpha) + y * alpha);
      }
    }
    if (opt.recompute_bn) subject.evaluator().recompute_bn(subject.model());
    PathPoint p{alpha, nan, nan, nan, nan};
    if (opt.train) {
      const auto f = subject.train_pass(n_train);
      p.train_loss = f.loss;
      p.train_acc = f.acc;
    }
    if (opt.test) {
      const auto f = subject.test_pass();
      p.test_loss = f.loss;
      p.test_acc = f.acc;
    }
    path.points.push_back(p);
  }
  auto pick = [&](bool on, auto get) { return on ? barrier(path.points, get) : nan; };
  path.train_loss_barrier = pick(opt.train, [](const PathPoint& p) { return p.train_loss; });
  path.train_error_barrier = pick(opt.train, [](const PathPoint& p) { return 1.0 - p.train_acc; });
  path.test_loss_barrier = pick(opt.test, [](const PathPoint& p) { return p.test_loss; });
  path.test_error_barrier = pick(opt.test, [](const PathPoint& p) { return 1.0 - p.test_acc; });
  return path;
}

}  // namespace swamp

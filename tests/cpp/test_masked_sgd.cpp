// Masked SGD: momentum and weight decay must not bring pruned weights back (the trap of a mask
// applied to the weights but not to the update), against an update computed here by hand.
#include <ATen/ATen.h>

#include "swamp/optim.h"
#include "unit.h"

UNIT_TEST(momentum_and_weight_decay_leave_pruned_weights_at_zero) {
  auto w = at::tensor({1.0, 0.0, -2.0, 0.0}, at::kDouble);
  const auto mask = unit::bools({1, 0, 1, 0});
  w.set_requires_grad(true);
  swamp::SgdOptions opt;
  opt.momentum = 0.9;
  opt.weight_decay = 0.1;
  swamp::MaskedSGD sgd({w}, {mask}, opt);
  at::Tensor buf = at::zeros({4}, at::kDouble);
  at::Tensor ref = w.detach().clone();
  for (int step = 0; step < 3; ++step) {
    const auto g = at::tensor({0.5, 0.7, -0.3, 1.0}, at::kDouble) * (step + 1);
    w.mutable_grad() = g.clone();
    sgd.step(0.1);
    // torch.optim.SGD's rule (dampening 0), then the mask
    const auto d = (g + 0.1 * ref) * mask.to(at::kDouble);
    buf = step == 0 ? d : 0.9 * buf + d;
    ref = (ref - 0.1 * buf) * mask.to(at::kDouble);
    EXPECT(at::allclose(w.detach(), ref, 0, 1e-12));
    EXPECT(w.detach()[1].item<double>() == 0.0 && w.detach()[3].item<double>() == 0.0);
  }
}

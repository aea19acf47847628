// Synchronised batch norm: two members of a data-parallel group (two threads here, each with its
// own scope and a group sum through shared memory) normalising their halves of a batch give what
// torch's batch norm gives on the whole batch: outputs, input gradients, the summed parameter
// gradients and the running statistics.
#include <ATen/ATen.h>
#include <torch/nn.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "swamp/layers.h"
#include "unit.h"

namespace {

// The sum over two members: each call waits for the other member's call and returns the sum.
class TwoMembers {
 public:
  void sum(int member, std::vector<at::Tensor>& t) {
    std::unique_lock<std::mutex> lock(m_);
    slots_[member].clear();
    for (const auto& x : t) slots_[member].push_back(x.clone());
    const int generation = generation_;
    if (++arrived_ == 2) {
      result_.clear();
      for (size_t i = 0; i < t.size(); ++i) result_.push_back(slots_[0][i] + slots_[1][i]);
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    for (size_t i = 0; i < t.size(); ++i) t[i].copy_(result_[i]);
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0, generation_ = 0;
  std::vector<at::Tensor> slots_[2], result_;
};

void set_affine(torch::nn::BatchNorm2dImpl& bn, const at::Tensor& w, const at::Tensor& b) {
  torch::NoGradGuard no_grad;
  bn.weight.copy_(w);
  bn.bias.copy_(b);
}

}  // namespace

UNIT_TEST(two_members_normalise_with_the_whole_batchs_statistics) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({8, 3, 4, 4}) * 2 + 0.5;
  const at::Tensor g = at::randn({8, 3, 4, 4});
  const at::Tensor w = at::rand({3}) + 0.5, b = at::randn({3});
  // torch's batch norm on the whole batch
  torch::nn::BatchNorm2d ref(3);
  set_affine(*ref, w, b);
  const at::Tensor xr = x.clone().requires_grad_();
  const at::Tensor yr = ref->forward(xr);
  (yr * g).sum().backward();
  // two members, half the batch each
  TwoMembers group;
  swamp::layers::BatchNorm2d bns[2] = {swamp::layers::BatchNorm2d(3),
                                       swamp::layers::BatchNorm2d(3)};
  at::Tensor xs[2], ys[2];
  std::thread members[2];
  for (int k = 0; k < 2; ++k) {
    set_affine(*bns[k], w, b);
    xs[k] = x.narrow(0, 4 * k, 4).clone().requires_grad_();
    members[k] = std::thread([&, k] {
      swamp::layers::SyncBatchNormScope scope(
          [&group, k](std::vector<at::Tensor>& t) { group.sum(k, t); });
      EXPECT(swamp::layers::sync_batchnorm_active());
      ys[k] = bns[k]->forward(xs[k]);
      (ys[k] * g.narrow(0, 4 * k, 4)).sum().backward();
    });
  }
  for (auto& t : members) t.join();
  EXPECT(!swamp::layers::sync_batchnorm_active());
  const double tol = 1e-5;
  EXPECT(at::allclose(at::cat({ys[0], ys[1]}), yr, tol, tol));
  EXPECT(at::allclose(at::cat({xs[0].grad(), xs[1].grad()}), xr.grad(), tol, tol));
  EXPECT(at::allclose(bns[0]->weight.grad() + bns[1]->weight.grad(), ref->weight.grad(), tol, tol));
  EXPECT(at::allclose(bns[0]->bias.grad() + bns[1]->bias.grad(), ref->bias.grad(), tol, tol));
  for (int k = 0; k < 2; ++k) {
    EXPECT(at::allclose(bns[k]->running_mean, ref->running_mean, tol, tol));
    EXPECT(at::allclose(bns[k]->running_var, ref->running_var, tol, tol));
    EXPECT(bns[k]->num_batches_tracked.item<int64_t>() == 1);
  }
  // each half alone would have normalised differently: the test can tell
  swamp::layers::BatchNorm2d alone(3);
  set_affine(*alone, w, b);
  EXPECT(!at::allclose(alone->forward(x.narrow(0, 0, 4)), yr.narrow(0, 0, 4), 1e-3, 1e-3));
}

UNIT_TEST(without_a_scope_the_layer_is_torchs_batch_norm) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({6, 2, 3, 3});
  swamp::layers::BatchNorm2d ours(2);
  torch::nn::BatchNorm2d theirs(2);
  EXPECT(at::equal(ours->forward(x), theirs->forward(x)));
  EXPECT(at::equal(ours->running_var, theirs->running_var));
  EXPECT_THROWS(c10::Error, swamp::layers::sync_batch_norm(x, {}, {}, {}, {}, {}, 0.1, 1e-5));
}

// Averaging: the uniform average of particles in particle order, SWA's running average, and the
// batch-norm statistics recomputed as a cumulative average (not an exponential one).
#include <ATen/ATen.h>
#include <torch/nn.h>

#include "swamp/averaging.h"
#include "unit.h"

UNIT_TEST(the_particle_average_is_the_sum_in_particle_order_over_their_number) {
  at::manual_seed(0);
  std::vector<std::vector<at::Tensor>> parts;
  for (int p = 0; p < 3; ++p) parts.push_back({at::randn({5}), at::randn({2, 2})});
  std::vector<at::Tensor> out = {at::empty({5}), at::empty({2, 2})};
  swamp::average_in_order(parts, out);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto want = ((parts[0][i] + parts[1][i]) + parts[2][i]) / 3.0;
    EXPECT(at::equal(out[i], want));
  }
  swamp::UniformAverager uniform;
  std::vector<at::Tensor> out2 = {at::empty({5}), at::empty({2, 2})};
  uniform.average(parts, out2);
  for (size_t i = 0; i < out.size(); ++i) EXPECT(at::equal(out2[i], out[i]));
}

UNIT_TEST(swa_keeps_the_uniform_running_average_of_its_snapshots) {
  swamp::RunningAverage avg;
  for (double v : {1.0, 2.0, 6.0}) avg.update({at::full({3}, v, at::kDouble)});
  EXPECT(avg.count() == 3);
  EXPECT(at::allclose(avg.value()[0], at::full({3}, 3.0, at::kDouble)));
}

UNIT_TEST(batchnorm_statistics_are_recomputed_as_the_cumulative_average) {
  torch::nn::Sequential net(torch::nn::Linear(2, 3), torch::nn::BatchNorm1d(3));
  net->to(at::kDouble);
  net->eval();
  EXPECT(swamp::has_batchnorm(*net));
  EXPECT(!swamp::has_batchnorm(*torch::nn::Sequential(torch::nn::Linear(2, 3))));
  at::manual_seed(1);
  const std::vector<at::Tensor> batches = {at::randn({4, 2}, at::kDouble) * 3 + 1,
                                           at::randn({4, 2}, at::kDouble) - 2};
  const bool did = swamp::recompute_batchnorm(*net, [&] {
    for (const auto& x : batches) net->forward(x);
  });
  EXPECT(did);
  EXPECT(!net->is_training());  // the mode is put back
  auto lin = net[0]->as<torch::nn::Linear>();
  auto bn = net[1]->as<torch::nn::BatchNorm1d>();
  torch::NoGradGuard no_grad;
  at::Tensor mean = at::zeros({3}, at::kDouble), var = at::zeros({3}, at::kDouble);
  for (const auto& x : batches) {
    const auto h = lin->forward(x);
    mean += h.mean(0) / 2.0;
    var += h.var(0, /*unbiased=*/true) / 2.0;
  }
  EXPECT(at::allclose(bn->running_mean, mean, 1e-12, 1e-12));
  EXPECT(at::allclose(bn->running_var, var, 1e-12, 1e-12));
  EXPECT(bn->options.momentum().has_value());  // its momentum is put back
}

UNIT_TEST(batchnorm_statistics_name_every_layers_running_mean_variance_and_count) {
  torch::nn::Sequential net(
      torch::nn::Linear(2, 3), torch::nn::BatchNorm1d(3), torch::nn::Linear(3, 2),
      torch::nn::BatchNorm1d(torch::nn::BatchNormOptions(2).track_running_stats(false)),
      torch::nn::BatchNorm1d(2));
  const auto first = net[1]->as<torch::nn::BatchNorm1d>();
  const auto last = net[4]->as<torch::nn::BatchNorm1d>();
  const std::vector<at::Tensor> stats = swamp::batchnorm_statistics(*net);
  // the layer without running statistics has none to give
  EXPECT(stats.size() == 6);
  EXPECT(stats[0].is_same(first->running_mean) && stats[1].is_same(first->running_var) &&
         stats[2].is_same(first->num_batches_tracked));
  EXPECT(stats[3].is_same(last->running_mean) && stats[5].is_same(last->num_batches_tracked));
  // one batch at a time: the statistics are that batch's mean and unbiased variance
  net->to(at::kDouble);
  at::manual_seed(2);
  const at::Tensor x = at::randn({5, 2}, at::kDouble);
  swamp::recompute_batchnorm(*net, [&] { net->forward(x); });
  torch::NoGradGuard no_grad;
  const at::Tensor h = net[0]->as<torch::nn::Linear>()->forward(x);
  EXPECT(at::allclose(first->running_mean, h.mean(0), 1e-12, 1e-12));
  EXPECT(at::allclose(first->running_var, h.var(0, /*unbiased=*/true), 1e-12, 1e-12));
  EXPECT(first->num_batches_tracked.item<int64_t>() == 1);
}

// Uses the swamp_core C++ API directly: exact global magnitude pruning of a few tensors.
// Exits non-zero when a check fails, so it doubles as a C++ test.
#include <swamp/swamp.h>
#include <torch/torch.h>

#include <cstdio>
#include <vector>

static int failures = 0;
#define EXPECT(cond)                                                         \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      ++failures;                                                            \
    }                                                                        \
  } while (0)

static int64_t count_true(const std::vector<torch::Tensor>& masks) {
  int64_t n = 0;
  for (const auto& m : masks) n += m.sum().item<int64_t>();
  return n;
}

int main() {
  std::printf("swamp_core %s (built with torch %s)\n", swamp::version().c_str(),
              swamp::built_with_torch_version().c_str());
  torch::manual_seed(0);
  std::vector<torch::Tensor> weights = {torch::randn({300, 784}), torch::randn({100, 300}),
                                        torch::randn({10, 100})};
  int64_t total = 0;
  for (const auto& w : weights) total += w.numel();

  std::vector<torch::Tensor> masks;  // empty: everything unpruned
  int64_t remaining = total;
  for (int round = 1; round <= 5; ++round) {
    swamp::PruneStats stats;
    masks = swamp::global_magnitude_prune(weights, masks, 0.2, swamp::PruneBackend::Auto, &stats);
    EXPECT(stats.remaining_before == remaining);
    EXPECT(stats.pruned == swamp::prune_count(0.2, remaining));
    remaining -= stats.pruned;
    EXPECT(count_true(masks) == remaining);
    std::printf("round %d: kept %lld of %lld (sparsity %.4f), threshold %.5f\n", round,
                static_cast<long long>(remaining), static_cast<long long>(total),
                1.0 - static_cast<double>(remaining) / static_cast<double>(total), stats.threshold);
  }

  // The ATen path (used on GPUs) agrees with the native CPU kernel.
  auto a = swamp::global_magnitude_prune(weights, masks, 0.3, swamp::PruneBackend::Native);
  auto b = swamp::global_magnitude_prune(weights, masks, 0.3, swamp::PruneBackend::ATen);
  for (size_t i = 0; i < a.size(); ++i) EXPECT(torch::equal(a[i], b[i]));

  // Bad input is a c10::ValueError, not a crash.
  bool threw = false;
  try {
    swamp::global_magnitude_prune(weights, masks, 1.5);
  } catch (const c10::ValueError&) {
    threw = true;
  }
  EXPECT(threw);

  // A whole SWAMP run from C++: two well-separated Gaussian classes in 16 dimensions.
  {
    swamp::Dataset data;
    torch::Tensor y = torch::arange(400).remainder(2);
    data.x_train = torch::randn({400, 16}) + y.unsqueeze(1).to(torch::kFloat) * 3.0;
    data.y_train = y;
    torch::Tensor yt = torch::arange(100).remainder(2);
    data.x_test = torch::randn({100, 16}) + yt.unsqueeze(1).to(torch::kFloat) * 3.0;
    data.y_test = yt;
    data.num_classes = 2;
    swamp::Config cfg;
    cfg.model = "lenet_300_100";
    cfg.method = "swamp";
    cfg.particles = 2;
    cfg.rounds = 3;
    cfg.epochs = 3;
    cfg.batch_size = 50;
    swamp::RunResult res = swamp::run_imp(cfg, data);
    EXPECT(res.rounds.size() == 3);
    for (const auto& r : res.rounds) {
      std::printf("swamp round %lld: sparsity %.4f, accuracy %.3f, ensemble %.3f\n",
                  static_cast<long long>(r.round), r.sparsity, r.test_acc, r.ensemble_acc);
    }
    EXPECT(std::abs(res.rounds[2].sparsity - 0.36) < 1e-4);
    EXPECT(res.rounds[2].test_acc > 0.9);

    // The averaging seam: a custom averager (here one that keeps the first particle) is what
    // the run uses; the observer sees the round's particles and its final model.
    struct FirstParticle : swamp::ParticleAverager {
      int calls = 0;
      void average(const std::vector<std::vector<torch::Tensor>>& particles,
                   std::vector<torch::Tensor>& out) override {
        ++calls;
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < out.size(); ++i) out[i].copy_(particles[0][i]);
      }
    };
    auto first = std::make_shared<FirstParticle>();
    swamp::RunParts parts;
    parts.data = std::make_shared<swamp::TensorBatchSource>(data, torch::Device(torch::kCPU));
    parts.averager = first;
    swamp::Hooks hooks;
    int rounds_seen = 0;
    bool first_kept = true, mean_differs = false;
    hooks.on_models = [&](const swamp::RoundModels& rm) {
      ++rounds_seen;
      for (const auto& kv : rm.average) {
        first_kept = first_kept && torch::equal(kv.second, rm.particles.at(0).at(kv.first));
        const torch::Tensor mean =
            (rm.particles.at(0).at(kv.first) + rm.particles.at(1).at(kv.first)) / 2;
        mean_differs = mean_differs || !torch::allclose(kv.second, mean);
      }
    };
    swamp::run_imp(cfg, parts, hooks);
    EXPECT(first->calls == 3 && rounds_seen == 3);
    EXPECT(first_kept && mean_differs);

    // The model seam with the user's own module: a torch::nn::Module twin of lenet_300_100
    // starting from the zoo's θ_0 finds the zoo run's masks and accuracies.
    struct LenetImpl : torch::nn::Module {
      LenetImpl()
          : fc1(register_module("fc1", torch::nn::Linear(16, 300))),
            fc2(register_module("fc2", torch::nn::Linear(300, 100))),
            fc3(register_module("fc3", torch::nn::Linear(100, 2))) {}
      torch::Tensor forward(const torch::Tensor& x) {
        return fc3(torch::relu(fc2(torch::relu(fc1(x.flatten(1))))));
      }
      torch::nn::Linear fc1, fc2, fc3;
    };
    const swamp::RunResult zoo = swamp::run_imp(cfg, data);
    const uint64_t seed = cfg.seed;
    swamp::RunParts mine;
    mine.data = parts.data;
    mine.model = swamp::module_source("lenet twin", [seed] {
      auto net = std::make_shared<LenetImpl>();
      swamp::ModelPtr theta0 = swamp::create_model("lenet_300_100", swamp::ModelSpec{{16}, 2},
                                                   swamp::initial_weights_seed(seed));
      torch::NoGradGuard no_grad;
      auto src = theta0->named_parameters(true);
      for (auto& item : net->named_parameters(true)) item.value().copy_(src[item.key()]);
      return net;
    });
    const swamp::RunResult twin = swamp::run_imp(cfg, mine);
    EXPECT(twin.masks.size() == zoo.masks.size());
    for (const auto& kv : zoo.masks) EXPECT(torch::equal(kv.second, twin.masks.at(kv.first)));
    for (size_t r = 0; r < zoo.rounds.size(); ++r)
      EXPECT(zoo.rounds[r].test_acc == twin.rounds[r].test_acc);
    std::printf("own torch::nn::Module: masks and accuracies equal to the zoo run\n");

    // A module with nothing to prune, or asked to stack, is a c10::ValueError.
    bool nothing_to_prune = false, cannot_stack = false;
    try {
      swamp::RunParts none;
      none.data = parts.data;
      none.model = swamp::module_source("norm only", [] {
        return torch::nn::Sequential(torch::nn::BatchNorm1d(16), torch::nn::Flatten());
      });
      swamp::run_imp(cfg, none);
    } catch (const c10::ValueError& e) {
      nothing_to_prune = std::string(e.what()).find("no prunable parameter") != std::string::npos;
    }
    try {
      swamp::Config stacked = cfg;
      stacked.particle_mode = "stacked";
      swamp::run_imp(stacked, mine);
    } catch (const c10::ValueError&) {
      cannot_stack = true;
    }
    EXPECT(nothing_to_prune && cannot_stack);

    bool bad_config = false;
    cfg.particles = 0;
    try {
      swamp::run_imp(cfg, data);
    } catch (const c10::ValueError&) {
      bad_config = true;
    }
    EXPECT(bad_config);
  }

  if (failures == 0) std::printf("all checks passed\n");
  return failures == 0 ? 0 : 1;
}

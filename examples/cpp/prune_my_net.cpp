// Prune your own network from C++, no Python: a torch::nn::Module defined here, trained and
// pruned with SWAMP on data read from disk, final weights and masks written as safetensors.
//
//   prune_my_net <data.safetensors> <out_dir> [rounds] [particles] [precision]
//
// precision: fp32 (default), bf16 or fp16 (mixed precision: autocast forward, fp32 master
// weights); the run picks channels-last for itself (Config::channels_last "auto") and says so.
//
// data.safetensors holds x_train [N, 1, 28, 28] float, y_train [N] int64, x_test, y_test (e.g.
// written from Python with safetensors.torch.save_file). out_dir/model.safetensors gets the final
// averaged weights under the module's own names and the masks as "mask.<name>" (bool), the
// layout swamp_ext.Result.save writes; Python reads it with safetensors.torch.load_file.
//
// Started by torchrun, the particles spread over its processes (no Python there either):
//   torchrun --standalone --nproc_per_node=2 --no-python prune_my_net data.safetensors out 3 4
// every process trains its share of each round's particles; with more processes than particles
// (IMP: one particle) a group of processes trains each particle data-parallel, each process its
// shard of every batch (each draws its own dropout and batch-norm statistics for its shard, as in
// DDP). Rank 0 writes the file.
// Afterwards it prints the loss barrier between the last round's first two particles
// (swamp::linear_path, swamp/analysis.h: the paper's linear mode connectivity, in C++).
#include <swamp/swamp.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

// The user's network: nothing swamp-specific in it.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : conv(register_module("conv",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3).padding(1)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(8))),
        fc1(register_module("fc1", torch::nn::Linear(8 * 7 * 7, 64))),
        drop(register_module("drop", torch::nn::Dropout(0.1))),
        fc2(register_module("fc2", torch::nn::Linear(64, 10))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::max_pool2d(torch::relu(bn(conv(x))), 4);
    return fc2(drop(torch::relu(fc1(h.flatten(1)))));
  }

  torch::nn::Conv2d conv;
  torch::nn::BatchNorm2d bn;
  torch::nn::Linear fc1;
  torch::nn::Dropout drop;  // random in training: swamp seeds it per particle and step
  torch::nn::Linear fc2;
};
TORCH_MODULE(Net);

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <data.safetensors> <out_dir> [rounds] [particles]\n", argv[0]);
    return 2;
  }
  try {
    const swamp::SafetensorsFile file = swamp::load_safetensors(argv[1]);
    auto get = [&](const char* name) {
      auto it = file.tensors.find(name);
      TORCH_CHECK_VALUE(it != file.tensors.end(), argv[1], " has no tensor '", name, "'");
      return it->second;
    };
    swamp::Dataset data{get("x_train"), get("y_train"), get("x_test"), get("y_test"), 10, {}, {}};

    swamp::Config cfg;
    cfg.method = "swamp";
    cfg.rounds = argc > 3 ? std::atoi(argv[3]) : 3;
    cfg.particles = argc > 4 ? std::atoi(argv[4]) : 2;
    cfg.single_particle_rounds = 0;
    cfg.epochs = 2;
    cfg.rewind_epochs = 1;
    cfg.lr = 0.05;
    if (argc > 5) cfg.precision = argv[5];

    // Whatever state the program left torch's generator in (CALLER_SEED moves it), the run
    // draws its dropout masks from the config's seed: the result is the same.
    if (const char* caller = std::getenv("CALLER_SEED")) torch::manual_seed(std::atoll(caller));

    swamp::RunParts parts;
    parts.model = swamp::module_source("net", [] { return Net(); });
    parts.data = std::make_shared<swamp::TensorBatchSource>(data, torch::Device(torch::kCPU));
    const char* world = std::getenv("WORLD_SIZE");
    const bool spread = world != nullptr && std::atoi(world) > 1;
    bool primary = true;
    if (spread) {  // the rendezvous torchrun set up: a c10d TCPStore and collectives over it
      auto dist = std::make_shared<swamp::DistributedProcesses>(
          swamp::store_collectives_from_env(std::chrono::seconds(120)));
      primary = dist->primary();
      std::printf("%s\n", dist->describe().c_str());
      parts.processes = dist;
    }
    swamp::Hooks hooks;
    hooks.on_round = [](const swamp::RoundResult& r) {
      std::printf(
          "round %lld: %lld particles (processes per particle: %lld), sparsity %.4f, accuracy "
          "%.4f, "
          "ensemble %.4f\n",
          static_cast<long long>(r.round), static_cast<long long>(r.particles),
          static_cast<long long>(r.processes_per_particle), r.sparsity, r.test_acc, r.ensemble_acc);
    };
    std::vector<std::map<std::string, torch::Tensor>> last;  // the last round's particles
    hooks.on_models = [&](const swamp::RoundModels& m) { last = m.particles; };
    const swamp::RunResult res = swamp::run_imp(cfg, parts, hooks);
    if (!primary) return 0;  // every process holds the same result; rank 0 writes it
    std::printf("precision %s, channels-last %s\n", cfg.precision.c_str(),
                res.channels_last ? "yes" : "no");

    if (last.size() >= 2) {
      swamp::PathOptions along;
      along.points = 5;
      along.train = false;
      const swamp::LinearPath path = swamp::linear_path(cfg, parts, last[0], last[1], along);
      std::printf("particle barrier (test loss) %.6f, midpoint accuracy %.4f\n",
                  path.test_loss_barrier, path.points[2].test_acc);
    }

    std::map<std::string, torch::Tensor> out = res.state;
    for (const auto& kv : res.masks) out["mask." + kv.first] = kv.second;
    const std::string dir = argv[2];
    swamp::ensure_writable_dir(dir, "output folder");
    swamp::save_safetensors(dir + "/model.safetensors", out,
                            {{"format", "swamp_ext"}, {"model", "cpp:net"}});
    std::printf("final accuracy %.6f sparsity %.6f\n", res.rounds.back().test_acc,
                res.rounds.back().sparsity);
    std::printf("wrote %s/model.safetensors\n", dir.c_str());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
    return 1;
  }
  return 0;
}

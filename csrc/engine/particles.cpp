#include "particles.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

#include "../common/lanes.h"
#include "swamp/layers.h"

namespace swamp {

// ---- the path policy (public: swamp/engine.h) ------------------------------------------------
namespace {
bool has_convolutions(const torch::nn::Module& model) {
  for (const auto& m : model.modules(/*include_self=*/true))
    if (m->as<torch::nn::Conv2d>() || m->as<torch::nn::Conv1d>() || m->as<torch::nn::Conv3d>())
      return true;
  return false;
}
}  // namespace

int64_t lane_stack(const torch::nn::Module& model, int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "lane_stack: particles must be >= 1, got ", particles);
  const int64_t lanes = particle_lanes(particles);
  // Grouped convolutions are slow on the CPU (benchmarks/stacked_step.py): conv models keep one
  // model per particle.
  if (particles % lanes != 0 || has_convolutions(model)) return 1;
  return particles / lanes;
}

int64_t particle_lanes(int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "particle_lanes: particles must be >= 1, got ", particles);
  if (!lanes_concurrent()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(particles, at::get_num_threads()));
}

ParticlePath particle_path(const Config& c, const torch::nn::Module& model, int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "particle_path: particles must be >= 1, got ", particles);
  if (c.particle_mode == "stacked") return ParticlePath::kStacked;
  if (c.particle_mode == "sequential") return ParticlePath::kSequential;
  if (c.particle_mode == "threads") return ParticlePath::kThreads;
  if (particles <= 1) return ParticlePath::kSequential;  // nothing to train side by side
  // On a GPU, where one small model leaves the device mostly idle, the particles run stacked.
  if (!c10::Device(c.device).is_cpu()) return ParticlePath::kStacked;
  // Measured on a 2-core CPU (benchmarks/stacked_step.py, 4 particles): one thread a lane is
  // never slower than the other paths (lenet_300_100, a stacked model per lane: 0.95-0.98x the
  // stacked step from dense to 98% sparse; lenet5 / conv4_small / conv2 / resnet20, a model per
  // particle: 0.92-0.97x the sequential one): a small model leaves a two-thread pool idle, a
  // single thread runs its kernels at nearly full speed. It needs the particles to spread evenly
  // over the threads (each thread gets the same number).
  const int64_t threads = at::get_num_threads();
  if (threads > 1 && particles % threads == 0 && lanes_concurrent()) return ParticlePath::kThreads;
  // Otherwise models made of linear layers train faster stacked (lenet_300_100 1.2-1.3x dense,
  // 1.4x at 95% sparsity: batched matmuls, particle-major activations), models with convolutions
  // slower (0.4-0.66x: CPU grouped convolutions).
  return has_convolutions(model) ? ParticlePath::kSequential : ParticlePath::kStacked;
}

const char* particle_path_name(ParticlePath path) {
  switch (path) {
    case ParticlePath::kStacked:
      return "stacked";
    case ParticlePath::kThreads:
      return "threads";
    case ParticlePath::kSequential:
      break;
  }
  return "sequential";
}

namespace engine {

ParticleModels::ParticleModels(const Config& cfg, const ModelSource& source, ModelSpec spec,
                               const c10::Device& device, int64_t max_particles, uint64_t init_seed)
    : cfg_(cfg), source_(source), spec_(std::move(spec)), device_(device) {
  spec_.particles = 1;
  auto make = [&] {
    ModelPtr m = source_.create(spec_, init_seed);
    TORCH_CHECK(m != nullptr, "the model source returned no model");
    m->to(device_);
    return m;
  };
  ticket_ = make();
  for (int64_t p = 0; p < max_particles; ++p) particles_.push_back(make());
  final_ = make();
}

std::string threads_refusal(const std::string& identity) {
  return "Config.particle_mode threads: the model (" + identity +
         ") draws random numbers in training mode (dropout or another random layer) and the "
         "threads share torch's default generator, so its draws would depend on thread timing; "
         "use sequential, stacked or auto";
}

ParticlePath ParticleModels::path(int64_t n) const {
  ParticlePath p = particle_path(cfg_, *particles_.at(0), n);
  if (cfg_.particle_mode == "auto" && n > 1)
    if (auto own = source_.auto_path(device_, n)) p = *own;
  if (p == ParticlePath::kThreads && draws_random_) {
    TORCH_CHECK_VALUE(cfg_.particle_mode != "threads", threads_refusal(source_.identity()));
    p = ParticlePath::kSequential;
  }
  if (p != ParticlePath::kStacked || source_.stackable()) return p;
  TORCH_CHECK_VALUE(cfg_.particle_mode != "stacked", "Config.particle_mode stacked: the model (",
                    source_.identity(), ") cannot hold several particles in one module");
  return ParticlePath::kSequential;
}

Group ParticleModels::group_for(int64_t n, int64_t first, int64_t last) {
  const ParticlePath p = path(n);
  const int64_t count = last - first;
  if (count == 1) return single_group(*particles_[first]);
  if (p == ParticlePath::kStacked) return single_group(stacked_model(count), count);
  if (p == ParticlePath::kThreads)
    return threads_group(first, count,
                         source_.stackable() ? lane_stack(*particles_.at(0), count) : 1);
  return single_group(*particles_[first]);
}

Group ParticleModels::resumed_group(int64_t first, int64_t group, int64_t k) {
  const int64_t per_model = k > 1 ? group / k : group;
  TORCH_CHECK(k >= 1 && per_model >= 1 && per_model * k == group, "checkpoint: ", k, " models for ",
              group, " particles");
  if (k > 1) return threads_group(first, group, per_model);
  if (group > 1) return single_group(stacked_model(group), group);
  return single_group(*particles_.at(first));
}

int64_t ParticleModels::post_lanes(int64_t n) const {
  return n > 1 && path(n) == ParticlePath::kThreads ? particle_lanes(n) : 1;
}

Group ParticleModels::single_group(Model& model, int64_t particles) {
  Group g;
  g.models = {&model};
  g.per_model = particles;
  return g;
}

// `count` particles side by side: `per_model` stacked in each model (the particles' own models
// when 1), the models spread over the lanes.
Group ParticleModels::threads_group(int64_t first, int64_t count, int64_t per_model) {
  Group g;
  g.per_model = per_model;
  for (int64_t i = 0; i < count / per_model; ++i)
    g.models.push_back(per_model == 1 ? particles_.at(first + i).get()
                                      : &stacked_model(per_model, i));
  g.lanes = particle_lanes(static_cast<int64_t>(g.models.size()));
  return g;
}

Model& ParticleModels::stacked_model(int64_t group, int64_t index) {
  auto it = stacked_.find({group, index});
  if (it == stacked_.end()) {
    ModelSpec spec = spec_;
    spec.particles = group;
    ModelPtr m = source_.create(spec, 0);
    m->to(device_);
    it = stacked_.emplace(std::make_pair(group, index), m).first;
  }
  return *it->second;
}

namespace {
void broadcast_into(at::Tensor& stacked, const at::Tensor& single, int64_t group) {
  if (stacked.dim() == 0) {
    stacked.copy_(single);
    return;
  }
  std::vector<int64_t> shape(single.sizes().begin(), single.sizes().end());
  shape.insert(shape.begin(), group);
  stacked.view(shape).copy_(single.unsqueeze(0).expand(shape));
}
}  // namespace

void ParticleModels::rewind(Model& model, int64_t group, const Masks& masks) {
  if (group == 1) {
    copy_state(*ticket_, model);
    masks.apply(model);
    return;
  }
  torch::NoGradGuard no_grad;
  Model& single = *particles_[0];  // scratch: overwritten when the group is copied out
  copy_state(*ticket_, single);
  masks.apply(single);
  auto sp = single.named_parameters(true), sb = single.named_buffers(true);
  for (auto& item : model.named_parameters(true))
    broadcast_into(item.value(), sp[item.key()], group);
  for (auto& item : model.named_buffers(true)) broadcast_into(item.value(), sb[item.key()], group);
}

void ParticleModels::copy_out(Model& stacked, int64_t group, int64_t g, int64_t p) {
  torch::NoGradGuard no_grad;
  Model& single = *particles_.at(p);
  auto sp = stacked.named_parameters(true), sb = stacked.named_buffers(true);
  for (auto& item : single.named_parameters(true))
    item.value().copy_(layers::particle_slice(sp[item.key()], group, g));
  for (auto& item : single.named_buffers(true))
    item.value().copy_(layers::particle_slice(sb[item.key()], group, g));
}

}  // namespace engine
}  // namespace swamp

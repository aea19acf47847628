// The model seam: where the run's networks come from. The engine asks a ModelSource for the
// ticket, the particles, the averaged model and (where it can stack) models holding several
// particles; it never names a model class itself. Implementations: ZooModelSource (the built-in
// registry, swamp/models.h); user C++ modules and Python modules plug in here.
#pragma once

#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "swamp/export.h"
#include "swamp/models.h"

namespace swamp {

// How the particles of a round train (Config.particle_mode, swamp/engine.h).
enum class ParticlePath { kSequential, kStacked, kThreads };

class SWAMP_API ModelSource {
 public:
  virtual ~ModelSource() = default;
  // A model for `spec`, initialised from `seed` (the same seed gives the same weights).
  // spec.particles > 1 (only asked when stackable()): one module holding that many particles,
  // in the stacked layout of swamp/layers.h.
  virtual ModelPtr create(const ModelSpec& spec, uint64_t seed) const = 0;
  // Whether create() can hold several particles in one module.
  virtual bool stackable() const = 0;
  // Names of the prunable parameters of a single-particle model, in order. Default: the conv
  // and linear weights (parameters named "*weight" with at least 2 dimensions).
  virtual std::vector<std::string> prunable(const torch::nn::Module& model) const;
  // What the model is, for results and checkpoints (a resumed run must use the same one).
  virtual std::string identity() const = 0;
  // particle_mode "auto": how `particles` particles of this source train on `device`, where the
  // source knows better than the engine's rule (particle_path in swamp/engine.h, made for
  // the zoo); nullopt: that rule.
  virtual std::optional<ParticlePath> auto_path(const c10::Device& device,
                                                int64_t particles) const {
    (void)device;
    (void)particles;
    return std::nullopt;
  }
};

// A model of the built-in registry, by name (see model_names()).
class SWAMP_API ZooModelSource : public ModelSource {
 public:
  // Throws c10::ValueError for names the registry does not know.
  explicit ZooModelSource(std::string name);
  ModelPtr create(const ModelSpec& spec, uint64_t seed) const override;
  bool stackable() const override { return true; }
  std::string identity() const override { return "zoo:" + name_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

}  // namespace swamp

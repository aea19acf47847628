// The particles of a run and how they are grouped for training: the models (ticket, one per
// particle, the average, stacked ones), the path of a round (stacked, sequential, threads),
// rewinding to the ticket and collecting trained particles. Internal to swamp_core.
#pragma once

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "masks.h"
#include "swamp/engine.h"
#include "swamp/model_source.h"

namespace swamp::engine {

// The models a group of particles trains in: one model holding them all (stacked, or a single
// particle), or several models trained side by side in `lanes` threads (threads path).
struct Group {
  std::vector<Model*> models;
  int64_t per_model = 1;  // particles per model
  int64_t lanes = 1;      // threads path: models trained at once
  // Model k's tensors are [first[k], first[k + 1]) of the group's optimizer (size K + 1).
  std::vector<size_t> first;
  int64_t particles() const { return static_cast<int64_t>(models.size()) * per_model; }
};

// Why the threads path is refused for a model that draws random numbers in training.
std::string threads_refusal(const std::string& identity);

class ParticleModels {
 public:
  // The ticket, `max_particles` particle models and the averaged model, all from `init_seed`.
  ParticleModels(const Config& cfg, const ModelSource& source, ModelSpec spec,
                 const c10::Device& device, int64_t max_particles, uint64_t init_seed);

  Model& ticket() { return *ticket_; }
  Model& average() { return *final_; }
  Model& particle(int64_t p) { return *particles_.at(static_cast<size_t>(p)); }
  const c10::Device& device() const { return device_; }

  // The round's path for n particles: the config's choice, or (auto) the measured rule of
  // particle_path(); stacked only where the model source can stack; never threads for a model
  // that draws random numbers in training (the lanes would share torch's default generator).
  ParticlePath path(int64_t n) const;
  // Whether the model draws random numbers in training mode (dropout, stochastic depth, noise).
  void set_draws_random(bool v) { draws_random_ = v; }
  bool draws_random() const { return draws_random_; }
  // The particles [first, last) of a round of n (last < n: the rest are another process's): all
  // stacked in one model, one model each side by side in threads, or (sequential) only the
  // first of them, alone.
  Group group_for(int64_t n, int64_t first, int64_t last);
  // The shape a checkpointed group was started with: `k` models of `group` particles.
  Group resumed_group(int64_t first, int64_t group, int64_t k);
  // Lanes for the per-particle work after training (batch-norm statistics, evaluation) in a
  // round of n particles: those of the threads path, else 1.
  int64_t post_lanes(int64_t n) const;

  // The ticket under the masks, into every particle of `model` (`group` particles).
  void rewind(Model& model, int64_t group, const Masks& masks);
  // Particle g of a stacked model of `group` particles into particle model `p`.
  void copy_out(Model& stacked, int64_t group, int64_t g, int64_t p);
  // `model` alone, holding `particles` particles.
  static Group single_group(Model& model, int64_t particles = 1);

 private:
  Group threads_group(int64_t first, int64_t count, int64_t per_model);
  Model& stacked_model(int64_t group, int64_t index = 0);

  const Config& cfg_;
  const ModelSource& source_;
  ModelSpec spec_;
  c10::Device device_;
  ModelPtr ticket_, final_;
  std::vector<ModelPtr> particles_;
  // stacked models by (group size, index), made when first needed
  std::map<std::pair<int64_t, int64_t>, ModelPtr> stacked_;
  bool draws_random_ = false;
};

}  // namespace swamp::engine

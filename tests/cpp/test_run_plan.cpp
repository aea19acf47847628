// The run's plan and the round record's field list.
#include <c10/util/Exception.h>

#include <set>
#include <string>

#include "swamp/engine.h"
#include "swamp/model_source.h"
#include "unit.h"

UNIT_TEST(the_plan_gives_particles_per_round_as_the_method_says) {
  swamp::Config cfg;
  cfg.method = "swamp_plus";
  cfg.particles = 4;
  cfg.rounds = 5;
  cfg.single_particle_rounds = 2;
  const swamp::ZooModelSource zoo("lenet_300_100");
  const swamp::RunPlan plan = swamp::plan_run(cfg, zoo, swamp::ModelSpec{{1, 28, 28}, 10});
  EXPECT(plan.particles == (std::vector<int64_t>{1, 1, 4, 4, 4}));
  EXPECT(plan.max_particles() == 4);
  EXPECT(plan.swa && plan.device == "cpu" && plan.precision == "fp32");
  EXPECT(!plan.channels_last);  // no convolution
  cfg.method = "imp";
  EXPECT(swamp::particles_per_round(cfg) == (std::vector<int64_t>(5, 1)));
}

UNIT_TEST(the_plan_refuses_a_configuration_naming_the_field) {
  swamp::Config cfg;
  cfg.rewind_epochs = cfg.epochs;
  const swamp::ZooModelSource zoo("lenet_300_100");
  bool named = false;
  try {
    swamp::plan_run(cfg, zoo, swamp::ModelSpec{{1, 28, 28}, 10});
  } catch (const c10::ValueError& e) {
    named =
        std::string(e.what_without_backtrace()).find("Config.rewind_epochs") != std::string::npos;
  }
  EXPECT(named);
}

UNIT_TEST(the_round_record_lists_each_field_once_with_a_known_kind) {
  const std::set<std::string> kinds = {"count", "figure", "optional_figure", "per_particle",
                                       "per_layer"};
  std::set<std::string> names;
  for (const auto& f : swamp::round_fields()) {
    EXPECT(kinds.count(f.kind) == 1);
    EXPECT(names.insert(f.name).second);
    EXPECT(f.lo <= f.hi && !f.doc.empty());
  }
  EXPECT(names.count("test_acc") == 1 && names.count("processes_per_particle") == 1);
  const swamp::RoundResult r;
  EXPECT(r.particles == 1 && r.processes == 1 && r.processes_per_particle == 1);
}

// What a checkpoint must match to be resumed: the configuration (every field but `rounds`) and
// the model's architecture, as text, and the difference in words. Internal to swamp_core.
#pragma once

#include <string>

#include "swamp/engine.h"
#include "swamp/models.h"

namespace swamp::engine {

// One line per parameter and buffer: "<name> <shape> <dtype>", in order.
std::string architecture(const torch::nn::Module& m);
// "" when equal; else the first tensor that differs, in words.
std::string architecture_diff(const std::string& saved, const std::string& now);
// The configuration as "field=value" lines.
std::string encode_config(const Config& c);
// "" when the saved configuration equals `now` but for `rounds`; else one line per field.
std::string config_diff(const Config& now, const std::string& saved_text);

}  // namespace swamp::engine

#include "swamp/round_record.h"

namespace swamp {

const std::vector<RoundField>& round_fields() {
  static const std::vector<RoundField> fields = {
#define SWAMP_ROUND_FIELD_DATA(kind, name, init, lo, hi, required, doc) \
  RoundField{#kind, #name, static_cast<double>(lo), static_cast<double>(hi), required, doc},
      SWAMP_ROUND_FIELDS(SWAMP_ROUND_FIELD_DATA)
#undef SWAMP_ROUND_FIELD_DATA
  };
  return fields;
}

}  // namespace swamp

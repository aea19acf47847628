// Internal: a double as text that reads back to the same bits (17 significant digits), for the
// configuration's text form, checkpoint records and data fingerprints.
#pragma once

#include <cstdio>
#include <string>

namespace swamp {

inline std::string exact_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace swamp

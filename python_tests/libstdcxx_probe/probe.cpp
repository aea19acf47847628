#include <cstring>
#include <sstream>
#include <string>

// Writes "n=42 0.5" into buf (what a message with numbers does inside swamp_core) and returns
// its length. With a second libstdc++ copy in the process the numbers vanish or it crashes.
extern "C" __attribute__((visibility("default"))) int swamp_probe_write(char* buf, int size) {
  std::ostringstream s;
  s << "n=" << 42 << " " << 0.5;
  const std::string text = s.str();
  std::strncpy(buf, text.c_str(), static_cast<std::size_t>(size));
  return static_cast<int>(text.size());
}

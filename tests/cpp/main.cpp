#include <c10/util/Exception.h>

#include <exception>
#include <iostream>

#include "unit.h"

namespace unit {
std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}
}  // namespace unit

int main() {
  int failed = 0;
  for (const auto& c : unit::cases()) {
    try {
      c.body();
      std::cout << "ok      " << c.name << "\n";
    } catch (const unit::Failure& f) {
      ++failed;
      std::cout << "FAILED  " << c.name << ": " << f.what << "\n";
    } catch (const c10::Error& e) {
      ++failed;
      std::cout << "FAILED  " << c.name << ": exception: " << e.what_without_backtrace() << "\n";
    } catch (const std::exception& e) {
      ++failed;
      std::cout << "FAILED  " << c.name << ": exception: " << e.what() << "\n";
    }
  }
  std::cout << unit::cases().size() - failed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}

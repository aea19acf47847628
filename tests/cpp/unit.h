// A minimal test harness: UNIT_TEST(name) { EXPECT(...); } registers a case; main runs them all.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace unit {
struct Case {
  const char* name;
  std::function<void()> body;
};
std::vector<Case>& cases();
struct Register {
  Register(const char* name, std::function<void()> body) { cases().push_back({name, body}); }
};
struct Failure {
  std::string what;
};
// A bool tensor from 0 / 1 values (at::tensor takes no bool lists).
inline at::Tensor bools(std::initializer_list<int64_t> v) {
  return at::tensor(std::vector<int64_t>(v), at::kLong).to(at::kBool);
}
}  // namespace unit

#define UNIT_TEST(name)                                       \
  static void name();                                         \
  static const unit::Register name##_registered(#name, name); \
  static void name()

#define EXPECT(...)                                                                \
  do {                                                                             \
    if (!(__VA_ARGS__))                                                            \
      throw unit::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                          ": EXPECT(" #__VA_ARGS__ ") failed"};                    \
  } while (0)

// `expr` must throw an exception of type `type`.
#define EXPECT_THROWS(type, expr)                                                  \
  do {                                                                             \
    bool thrown_ = false;                                                          \
    try {                                                                          \
      (void)(expr);                                                                \
    } catch (const type&) {                                                        \
      thrown_ = true;                                                              \
    }                                                                              \
    if (!thrown_)                                                                  \
      throw unit::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                          ": " #expr " did not throw " #type};                     \
  } while (0)

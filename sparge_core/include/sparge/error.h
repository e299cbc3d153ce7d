// Errors for bad input: every public entry point validates its arguments and throws sparge::Error with a
// message naming the argument, the expected and the actual value.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sparge {

class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <typename... Args>
[[noreturn]] void fail(const char* where, const Args&... args) {
  std::ostringstream os;
  os << where << ": ";
  (os << ... << args);
  throw Error(os.str());
}
}  // namespace detail

}  // namespace sparge

// SPARGE_CHECK(cond, "argument `q`: expected rank 4, got ", q.dim());
#define SPARGE_CHECK(cond, ...)                                 \
  do {                                                          \
    if (!(cond)) ::sparge::detail::fail(__func__, __VA_ARGS__); \
  } while (0)

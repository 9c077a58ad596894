// Errors inside spinel are exceptions of one type; the CLI and the C API turn
// them into a message and a status at the boundary.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace spinel {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, T&& v, Rest&&... rest) {
  os << std::forward<T>(v);
  append(os, std::forward<Rest>(rest)...);
}
}  // namespace detail

// fail("tensor ", name, " has ", n, " elements") throws spinel::Error.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  std::ostringstream os;
  detail::append(os, std::forward<Args>(args)...);
  throw Error(os.str());
}

}  // namespace spinel

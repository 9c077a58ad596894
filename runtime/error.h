// Errors inside spinel are exceptions of one type; the CLI and the C API turn
// them into a message and a status at the boundary.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
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

// A message safe to print on a terminal or in a log: names read from a
// file may hold any bytes. Control characters (but '\n'), DEL and bytes that
// are not valid UTF-8 become \xNN; past max_bytes the rest is cut and
// counted. Applying it twice changes nothing.
std::string printable(std::string_view msg, size_t max_bytes = 16384);

// fail("tensor ", name, " has ", n, " elements") throws spinel::Error.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  std::ostringstream os;
  detail::append(os, std::forward<Args>(args)...);
  throw Error(printable(os.str()));
}

}  // namespace spinel

#include "runtime/util/text_input.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/error.h"

namespace spinel {

std::vector<std::string> split_lines(std::string_view data) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t end = data.find('\n', pos);
    if (end == std::string_view::npos) end = data.size();
    std::string_view line = data.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.emplace_back(line);
    pos = end + 1;
  }
  return lines;
}

std::string read_text_file(const std::string& path, uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) fail("cannot read input file '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("input file '", path, "' is a directory");
  }
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      ::close(fd);
      fail("error reading input file '", path, "': ", std::strerror(err));
    }
    if (got == 0) break;
    if (data.size() + static_cast<uint64_t>(got) > max_bytes) {
      ::close(fd);
      fail("input file '", path, "' holds more than ", max_bytes, " bytes");
    }
    data.append(buf, static_cast<size_t>(got));
  }
  ::close(fd);
  return data;
}

std::vector<std::string> read_text_lines(const std::string& path, uint64_t max_bytes) {
  return split_lines(read_text_file(path, max_bytes));
}

}  // namespace spinel

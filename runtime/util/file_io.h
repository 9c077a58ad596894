// Opening the files a user names as models, tokenizers or weights: only
// regular files, without blocking on a FIFO or a device, and read whole with
// a size limit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spinel {

// An open read-only descriptor of a regular file; closes on destruction.
class RegularFile {
 public:
  // Throws spinel::Error naming `path` and `what` ("model", "vocabulary file",
  // ...) when it cannot be opened or is not a regular file. A FIFO or a
  // device is refused without blocking (opened O_NONBLOCK, checked, then
  // switched back to blocking reads).
  RegularFile(const std::string& path, const char* what);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  // Reads [offset, offset + n) into out; throws on a short read.
  void read_at(uint64_t offset, void* out, size_t n) const;

 private:
  std::string path_;
  const char* what_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// The whole file; throws if it is larger than max_bytes (naming both sizes).
std::vector<char> read_regular_file(const std::string& path, const char* what, uint64_t max_bytes);

// True when a and b name the same existing file (same device and inode).
bool same_file(const std::string& a, const std::string& b);

}  // namespace spinel

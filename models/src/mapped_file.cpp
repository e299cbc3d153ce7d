// Read-only file mapping (see mapped_file.h).
#include "sparge/models/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace sparge::models {

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path, const std::string& what) {
  const auto fail = [&](const char* step) {
    throw std::runtime_error(what + " " + path + ": cannot " + step + " the file: " + std::strerror(errno));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("stat");
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->size_ = static_cast<uint64_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail("map");
    }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr && size_ > 0) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace sparge::models

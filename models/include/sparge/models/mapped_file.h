// A read-only memory map of a whole file (the weight readers' view of a checkpoint): pages are read on first
// touch and shared with the page cache, so opening a large checkpoint costs nothing until tensors are loaded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace sparge::models {

class MappedFile {
 public:
  // Throws std::runtime_error("<what> <path>: cannot open/stat/map the file: <errno text>").
  static std::shared_ptr<const MappedFile> open(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace sparge::models

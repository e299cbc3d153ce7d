// safetensors files (the format of Hugging Face checkpoints and of captured Q/K/V): an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the raw little-endian data. Reading checks everything a truncated or corrupted file can get wrong
// (header length, JSON, dtype, shape vs byte count, offsets inside the data, overlaps) and fails naming the
// file and the tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sparge::models {

class MappedFile;

struct SafetensorsFile {
  std::string path;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> names;  // in file order
  // Loads one tensor (CPU, its stored dtype); throws std::runtime_error naming the tensor when it is absent.
  at::Tensor load(const std::string& name) const;
  bool contains(const std::string& name) const;

  struct Entry {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte offsets inside the data section
  };
  std::map<std::string, Entry> entries;
  uint64_t data_offset = 0;               // 8 + header length
  std::shared_ptr<const MappedFile> map;  // the file, memory-mapped read-only
};

// Parses the header and validates every entry against the file size.
SafetensorsFile open_safetensors(const std::string& path);

// A checkpoint of one or more safetensors files: a single file, a `*.safetensors.index.json` whose weight_map
// names the shard of every tensor (shards beside it), or a directory holding either (model.safetensors or
// model.safetensors.index.json). Every shard is opened and every weight_map entry checked on open: a missing
// shard, a tensor absent from its shard, or a tensor in two shards fails naming the file and the tensor.
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open(const std::string& path);
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  at::Tensor load(const std::string& name) const;  // CPU, stored dtype; throws naming the tensor
  const SafetensorsFile::Entry& entry(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::vector<SafetensorsFile>& shards() const { return shards_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t> where_;  // tensor -> shard
};

// Writes tensors (contiguous copies, CPU) in the safetensors format, names in map order.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace sparge::models

// GGUF files (llama.cpp's single-file checkpoint format), version 2 and 3, read through a read-only memory
// map.
//
// Layout: magic "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv_count metadata entries (string key,
// u32 type, value; types 0..12 incl. nested arrays), tensor_count tensor infos (name, u32 n_dims, u64 dims
// with dims[0] innermost, u32 ggml type, u64 offset relative to the data section), padding to
// general.alignment (default 32), then the data section. Every count, length and offset is checked against
// the file size before it is used; errors name the file and the key or tensor.
//
// Tensors come back in torch order (dims reversed: ne = [cols, rows] -> (rows, cols)), dequantized to the
// asked dtype on the CPU. Supported ggml types: F32, F16, BF16, F64, I8, I16, I32, I64, Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K is not a storage type and is refused.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace sparge::models {

// ggml tensor types (the numbering is the file format's).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};
const char* ggml_type_name(GgmlType t);

// One metadata value. Integers of every width are kept as int64_t (u64 above INT64_MAX is refused), floats as
// double; arrays hold one of the scalar kinds.
struct GgufValue {
  using Array =
      std::variant<std::vector<int64_t>, std::vector<double>, std::vector<bool>, std::vector<std::string>>;
  std::variant<int64_t, double, bool, std::string, Array> value;
  uint32_t type = 0;       // the file's value type (0..12)
  uint32_t elem_type = 0;  // for arrays, the element type
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // the file's order: ne[0] innermost
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
  std::vector<int64_t> shape() const;  // torch order: ne reversed
};

class MappedFile;

class GgufFile {
 public:
  // Maps the file and parses the header; throws std::runtime_error naming the file and what is wrong.
  static GgufFile open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  // Metadata, in file order of keys.
  const std::vector<std::string>& keys() const { return keys_; }
  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  const GgufValue& value(const std::string& key) const;  // throws "missing metadata key `...`"
  // Typed getters: throw naming the key and the actual type when it is absent or of another kind.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;   // any integer type
  double get_float(const std::string& key) const;  // float32/64, or an integer
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  // With a default when the key is absent (a present key of the wrong type still throws).
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

  // Tensors, in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return tensor_index_.count(name) != 0; }
  const GgufTensorInfo& info(const std::string& name) const;  // throws "tensor `...` not found"
  // The tensor dequantized to `dtype` (float types), CPU, torch order; throws naming the tensor.
  at::Tensor load(const std::string& name, at::ScalarType dtype) const;
  // The raw bytes of a tensor (inside the map; valid while this object lives).
  const uint8_t* raw(const std::string& name) const;

 private:
  std::shared_ptr<const MappedFile> map_;
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Dequantizes `n` values of ggml type `type` from `src` into float32 `dst` (n a multiple of the type's block
// size).
void dequantize_row(GgmlType type, const uint8_t* src, float* dst, int64_t n);
// Values per block and bytes per block of a ggml type; throws for types we cannot read.
int64_t ggml_block_size(GgmlType type);
int64_t ggml_type_bytes(GgmlType type);

}  // namespace sparge::models

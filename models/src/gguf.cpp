// GGUF reading (see gguf.h): header parsing with bounds checks on a read-only memory map, and dequantization
// of the ggml block formats to float32.
#include "sparge/models/gguf.h"

#include "sparge/models/mapped_file.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace sparge::models {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int64_t kQK = 32;              // values per block of the Q4_0..Q8_0 formats
constexpr int64_t kQKK = 256;            // values per super-block of the k-quants
constexpr uint32_t kTypeArray = 9;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("GGUF file " + path + ": " + what);
}

const char* value_type_name(uint32_t t) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return t < 13 ? names[t] : "unknown";
}

float fp16(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// Bounds-checked little-endian reader over the header.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}
  uint64_t pos() const { return pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > size_ - pos_)
      fail(path_, "corrupted or incomplete: " + what + " needs " + std::to_string(n) + " bytes at offset " +
                      std::to_string(pos_) + ", the file has " + std::to_string(size_));
  }
  // n elements of at least `per` bytes each must fit (without overflowing the product).
  void need_count(uint64_t n, uint64_t per, const std::string& what) const {
    if (n > (size_ - pos_) / per)
      fail(path_, "corrupted or incomplete: " + what + " cannot fit in the " + std::to_string(size_ - pos_) +
                      " bytes left at offset " + std::to_string(pos_));
  }
  void skip(uint64_t n, const std::string& what) {
    need(n, what);
    pos_ += n;
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const auto n = read<uint64_t>(what + " (length)");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

int64_t read_int(Cursor& c, uint32_t type, const std::string& what) {
  switch (type) {
    case 0:
      return c.read<uint8_t>(what);
    case 1:
      return c.read<int8_t>(what);
    case 2:
      return c.read<uint16_t>(what);
    case 3:
      return c.read<int16_t>(what);
    case 4:
      return c.read<uint32_t>(what);
    case 5:
      return c.read<int32_t>(what);
    case 10: {
      const auto v = c.read<uint64_t>(what);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw std::out_of_range(what + ": uint64 value " + std::to_string(v) + " exceeds int64");
      return static_cast<int64_t>(v);
    }
    case 11:
      return c.read<int64_t>(what);
    default:
      return 0;
  }
}
bool is_int_type(uint32_t t) {
  return t <= 5 || t == 10 || t == 11;
}
uint64_t min_bytes(uint32_t t) {  // smallest encoding of one element, for array-count sanity checks
  switch (t) {
    case 0:
    case 1:
    case 7:
      return 1;
    case 2:
    case 3:
      return 2;
    case 4:
    case 5:
    case 6:
      return 4;
    case 8:
    case 10:
    case 11:
    case 12:
      return 8;
    case 9:
      return 12;
    default:
      return 1;
  }
}

void skip_value(Cursor& c, uint32_t type, const std::string& what, int depth);

// Reads one value of `type` into `out` (arrays: elements of one scalar kind; nested arrays are skipped and
// kept as an empty string list, since no reader needs them).
void read_value(Cursor& c, uint32_t type, const std::string& path, const std::string& what, GgufValue& out) {
  out.type = type;
  if (is_int_type(type)) {
    out.value = read_int(c, type, what);
  } else if (type == 6) {
    out.value = static_cast<double>(c.read<float>(what));
  } else if (type == 12) {
    out.value = c.read<double>(what);
  } else if (type == 7) {
    out.value = c.read<uint8_t>(what) != 0;
  } else if (type == 8) {
    out.value = c.string(what);
  } else if (type == kTypeArray) {
    const auto elem = c.read<uint32_t>(what + " (array type)");
    const auto n = c.read<uint64_t>(what + " (array length)");
    if (elem > 12) fail(path, what + ": unknown array element type " + std::to_string(elem));
    c.need_count(n, min_bytes(elem), what + " (" + std::to_string(n) + " elements)");
    out.elem_type = elem;
    if (is_int_type(elem)) {
      std::vector<int64_t> v(n);
      for (auto& x : v) x = read_int(c, elem, what);
      out.value = GgufValue::Array(std::move(v));
    } else if (elem == 6 || elem == 12) {
      std::vector<double> v(n);
      for (auto& x : v) x = elem == 6 ? c.read<float>(what) : c.read<double>(what);
      out.value = GgufValue::Array(std::move(v));
    } else if (elem == 7) {
      std::vector<bool> v(n);
      for (uint64_t i = 0; i < n; ++i) v[i] = c.read<uint8_t>(what) != 0;
      out.value = GgufValue::Array(std::move(v));
    } else if (elem == 8) {
      std::vector<std::string> v(n);
      for (auto& x : v) x = c.string(what);
      out.value = GgufValue::Array(std::move(v));
    } else {
      for (uint64_t i = 0; i < n; ++i) skip_value(c, elem, what, 1);
      out.value = GgufValue::Array(std::vector<std::string>{});
    }
  } else {
    fail(path, what + ": unknown value type " + std::to_string(type));
  }
}

void skip_value(Cursor& c, uint32_t type, const std::string& what, int depth) {
  if (depth > 8) throw std::runtime_error(what + ": arrays nested deeper than 8 levels");
  if (type == kTypeArray) {
    const auto elem = c.read<uint32_t>(what);
    const auto n = c.read<uint64_t>(what);
    if (elem > 12) throw std::runtime_error(what + ": unknown array element type " + std::to_string(elem));
    c.need_count(n, min_bytes(elem), what);
    for (uint64_t i = 0; i < n; ++i) skip_value(c, elem, what, depth + 1);
  } else if (type == 8) {
    c.string(what);
  } else if (type <= 12) {
    c.skip(min_bytes(type), what);
  } else {
    throw std::runtime_error(what + ": unknown value type " + std::to_string(type));
  }
}

struct TypeTraits {
  GgmlType type;
  const char* name;
  int64_t block;  // values per block
  int64_t bytes;  // bytes per block
};
constexpr TypeTraits kTypes[] = {
    {GgmlType::F32, "F32", 1, 4},        {GgmlType::F16, "F16", 1, 2},
    {GgmlType::BF16, "BF16", 1, 2},      {GgmlType::F64, "F64", 1, 8},
    {GgmlType::I8, "I8", 1, 1},          {GgmlType::I16, "I16", 1, 2},
    {GgmlType::I32, "I32", 1, 4},        {GgmlType::I64, "I64", 1, 8},
    {GgmlType::Q4_0, "Q4_0", kQK, 18},   {GgmlType::Q4_1, "Q4_1", kQK, 20},
    {GgmlType::Q5_0, "Q5_0", kQK, 22},   {GgmlType::Q5_1, "Q5_1", kQK, 24},
    {GgmlType::Q8_0, "Q8_0", kQK, 34},   {GgmlType::Q4_K, "Q4_K", kQKK, 144},
    {GgmlType::Q5_K, "Q5_K", kQKK, 176}, {GgmlType::Q6_K, "Q6_K", kQKK, 210},
};
const TypeTraits* traits(GgmlType t) {
  for (const auto& tt : kTypes)
    if (tt.type == t) return &tt;
  return nullptr;
}

// ---- block dequantizers: each writes one block of values to y.
// Q4_0: d (f16), 16 bytes of 4-bit q; y[j] = (lo(q_j) - 8) d, y[j + 16] = (hi(q_j) - 8) d.
void deq_q4_0(const uint8_t* b, float* y) {
  const float d = fp16(b);
  const uint8_t* q = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((q[j] & 0xF) - 8) * d;
    y[j + 16] = static_cast<float>((q[j] >> 4) - 8) * d;
  }
}
// Q4_1: d, m (f16), 16 bytes; y = q d + m.
void deq_q4_1(const uint8_t* b, float* y) {
  const float d = fp16(b), m = fp16(b + 2);
  const uint8_t* q = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(q[j] & 0xF) * d + m;
    y[j + 16] = static_cast<float>(q[j] >> 4) * d + m;
  }
}
// Q5_0 / Q5_1: the fifth bit of value j (and j + 16) is bit j (j + 16) of the 32-bit qh.
void deq_q5(const uint8_t* b, float* y, bool has_min) {
  const float d = fp16(b), m = has_min ? fp16(b + 2) : 0.f;
  const uint8_t* p = b + (has_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const uint8_t* q = p + 4;
  const int offset = has_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int lo = (q[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (q[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(lo - offset) * d + m;
    y[j + 16] = static_cast<float>(hi - offset) * d + m;
  }
}
// Q8_0: d (f16), 32 int8.
void deq_q8_0(const uint8_t* b, float* y) {
  const float d = fp16(b);
  const auto* q = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(q[j]) * d;
}
// The 6-bit (scale, min) pair j of the 12-byte packed k-quant scales.
void scale_min_k4(int j, const uint8_t* s, int& sc, int& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}
// Q4_K: d, dmin (f16), 12 bytes of scales/mins, 128 bytes of 4-bit q; 8 sub-blocks of 32:
// y = d sc_i q - dmin m_i.
void deq_q4_k(const uint8_t* b, float* y) {
  const float d = fp16(b), dmin = fp16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < kQKK; j += 64, is += 2, q += 32) {
    int sc, mn;
    scale_min_k4(is, scales, sc, mn);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
    scale_min_k4(is + 1, scales, sc, mn);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}
// Q5_K: as Q4_K with 32 bytes of high bits (bit 2i / 2i+1 of qh[l] for sub-blocks 2i / 2i+1).
void deq_q5_k(const uint8_t* b, float* y) {
  const float d = fp16(b), dmin = fp16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < kQKK; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
    int sc, mn;
    scale_min_k4(is, scales, sc, mn);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
    scale_min_k4(is + 1, scales, sc, mn);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
  }
}
// Q6_K: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, d (f16); 16 sub-blocks of 16:
// y = d sc_i (q - 32).
void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = fp16(b + 208);
  for (int n = 0; n < kQKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

template <typename T>
void convert(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  const auto* tt = traits(t);
  return tt != nullptr ? tt->name : "unsupported";
}

int64_t ggml_block_size(GgmlType t) {
  const auto* tt = traits(t);
  if (tt == nullptr)
    throw std::invalid_argument("ggml type " + std::to_string(static_cast<uint32_t>(t)) +
                                " is not supported (supported: F32, F16, BF16, F64, I8..I64, "
                                "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)");
  return tt->block;
}
int64_t ggml_type_bytes(GgmlType t) {
  ggml_block_size(t);  // throws for unsupported types
  return traits(t)->bytes;
}

void dequantize_row(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const int64_t block = ggml_block_size(type), bytes = ggml_type_bytes(type);
  if (n % block != 0)
    throw std::invalid_argument(std::string("dequantize_row: n = ") + std::to_string(n) +
                                " is not a multiple of the " + ggml_type_name(type) + " block size " +
                                std::to_string(block));
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F64:
      convert<double>(src, dst, n);
      return;
    case GgmlType::I8:
      convert<int8_t>(src, dst, n);
      return;
    case GgmlType::I16:
      convert<int16_t>(src, dst, n);
      return;
    case GgmlType::I32:
      convert<int32_t>(src, dst, n);
      return;
    case GgmlType::I64:
      convert<int64_t>(src, dst, n);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        const uint32_t f = static_cast<uint32_t>(bits) << 16;
        std::memcpy(dst + i, &f, 4);
      }
      return;
    default:
      break;
  }
  void (*deq)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case GgmlType::Q4_0:
      deq = deq_q4_0;
      break;
    case GgmlType::Q4_1:
      deq = deq_q4_1;
      break;
    case GgmlType::Q5_0:
      deq = [](const uint8_t* b, float* y) { deq_q5(b, y, false); };
      break;
    case GgmlType::Q5_1:
      deq = [](const uint8_t* b, float* y) { deq_q5(b, y, true); };
      break;
    case GgmlType::Q8_0:
      deq = deq_q8_0;
      break;
    case GgmlType::Q4_K:
      deq = deq_q4_k;
      break;
    case GgmlType::Q5_K:
      deq = deq_q5_k;
      break;
    case GgmlType::Q6_K:
      deq = deq_q6_k;
      break;
    default:
      throw std::logic_error("dequantize_row: unhandled type");
  }
  for (int64_t i = 0; i < n / block; ++i) deq(src + i * bytes, dst + i * block);
}

std::vector<int64_t> GgufTensorInfo::shape() const {
  return {ne.rbegin(), ne.rend()};
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile g;
  g.path_ = path;
  g.map_ = MappedFile::open(path, "GGUF file");
  Cursor c(path, g.map_->data(), g.map_->size());
  if (g.map_->size() < 4 || c.read<uint32_t>("magic") != kMagic) fail(path, "not a GGUF file (bad magic)");
  g.version_ = c.read<uint32_t>("version");
  if (g.version_ != 2 && g.version_ != 3)
    fail(path, "unsupported GGUF version " + std::to_string(g.version_) +
                   " (expected 2 or 3; a big-endian file " + "reads as a huge version)");
  const auto n_tensors = c.read<uint64_t>("tensor count");
  const auto n_kv = c.read<uint64_t>("metadata count");
  c.need_count(n_kv, 12, "metadata (" + std::to_string(n_kv) + " entries)");
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string what = "metadata entry " + std::to_string(i);
    std::string key = c.string(what + " (key)");
    const auto type = c.read<uint32_t>("metadata `" + key + "` (type)");
    GgufValue v;
    read_value(c, type, path, "metadata `" + key + "`", v);
    if (g.kv_.count(key) != 0) fail(path, "duplicate metadata key `" + key + "`");
    g.keys_.push_back(key);
    g.kv_.emplace(std::move(key), std::move(v));
  }
  if (g.has("general.alignment")) {
    const int64_t a = g.get_int("general.alignment");
    if (a <= 0 || (a & (a - 1)) != 0)
      fail(path, "general.alignment = " + std::to_string(a) + ", expected a positive power of two");
    g.alignment_ = static_cast<uint64_t>(a);
  }
  c.need_count(n_tensors, 24, "tensor infos (" + std::to_string(n_tensors) + " tensors)");
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.string("tensor info " + std::to_string(i) + " (name)");
    const std::string what = "tensor `" + t.name + "`";
    const auto n_dims = c.read<uint32_t>(what + " (n_dims)");
    if (n_dims == 0 || n_dims > 8)
      fail(path, what + ": n_dims = " + std::to_string(n_dims) + ", expected 1..8");
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto n = c.read<uint64_t>(what + " (dims)");
      if (n == 0 || n > (1ull << 40) || static_cast<uint64_t>(numel) > (1ull << 48) / n)
        fail(path,
             what + ": dimension " + std::to_string(d) + " = " + std::to_string(n) + " is out of range");
      t.ne.push_back(static_cast<int64_t>(n));
      numel *= static_cast<int64_t>(n);
    }
    const auto type = c.read<uint32_t>(what + " (type)");
    t.type = static_cast<GgmlType>(type);
    const auto* tt = traits(t.type);
    if (tt == nullptr) fail(path, what + ": ggml type " + std::to_string(type) + " is not supported");
    if (t.ne[0] % tt->block != 0)
      fail(path, what + ": innermost dimension " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                     tt->name + " block size " + std::to_string(tt->block));
    t.nbytes = static_cast<uint64_t>(numel / tt->block * tt->bytes);
    t.offset = c.read<uint64_t>(what + " (offset)");
    if (t.offset % g.alignment_ != 0)
      fail(path, what + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                     std::to_string(g.alignment_));
    if (g.tensor_index_.count(t.name) != 0) fail(path, "duplicate " + what);
    g.tensor_index_.emplace(t.name, g.tensors_.size());
    g.tensors_.push_back(std::move(t));
  }
  g.data_offset_ = (c.pos() + g.alignment_ - 1) / g.alignment_ * g.alignment_;
  const uint64_t data_size = g.map_->size() >= g.data_offset_ ? g.map_->size() - g.data_offset_ : 0;
  for (const auto& t : g.tensors_)
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail(path, "corrupted or incomplete: tensor `" + t.name + "` occupies bytes [" +
                     std::to_string(t.offset) + ", " + std::to_string(t.offset + t.nbytes) +
                     ") of a data section of " + std::to_string(data_size) + " bytes");
  return g;
}

const GgufValue& GgufFile::value(const std::string& key) const {
  const auto it = kv_.find(key);
  if (it == kv_.end()) fail(path_, "missing metadata key `" + key + "`");
  return it->second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                             const char* expected) {
  std::string actual = value_type_name(v.type);
  if (v.type == kTypeArray) actual += std::string(" of ") + value_type_name(v.elem_type);
  fail(path, "metadata `" + key + "` is " + actual + ", expected " + expected);
}
}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  const auto& v = value(key);
  if (const auto* s = std::get_if<std::string>(&v.value)) return *s;
  wrong_type(path_, key, v, "string");
}
int64_t GgufFile::get_int(const std::string& key) const {
  const auto& v = value(key);
  if (const auto* i = std::get_if<int64_t>(&v.value)) return *i;
  wrong_type(path_, key, v, "an integer");
}
double GgufFile::get_float(const std::string& key) const {
  const auto& v = value(key);
  if (const auto* d = std::get_if<double>(&v.value)) return *d;
  if (const auto* i = std::get_if<int64_t>(&v.value)) return static_cast<double>(*i);
  wrong_type(path_, key, v, "a number");
}
bool GgufFile::get_bool(const std::string& key) const {
  const auto& v = value(key);
  if (const auto* b = std::get_if<bool>(&v.value)) return *b;
  wrong_type(path_, key, v, "bool");
}
std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const auto& v = value(key);
  if (const auto* a = std::get_if<GgufValue::Array>(&v.value))
    if (const auto* s = std::get_if<std::vector<std::string>>(a); s != nullptr && v.elem_type == 8) return *s;
  wrong_type(path_, key, v, "array of string");
}
std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const auto& v = value(key);
  if (const auto* a = std::get_if<GgufValue::Array>(&v.value))
    if (const auto* s = std::get_if<std::vector<int64_t>>(a)) return *s;
  wrong_type(path_, key, v, "array of integers");
}
std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const auto& v = value(key);
  if (const auto* a = std::get_if<GgufValue::Array>(&v.value)) {
    if (const auto* s = std::get_if<std::vector<double>>(a)) return *s;
    if (const auto* s = std::get_if<std::vector<int64_t>>(a)) return {s->begin(), s->end()};
  }
  wrong_type(path_, key, v, "array of numbers");
}
int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}
double GgufFile::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}
bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  return has(key) ? get_bool(key) : fallback;
}
std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

const GgufTensorInfo& GgufFile::info(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  if (it == tensor_index_.end()) fail(path_, "tensor `" + name + "` not found");
  return tensors_[it->second];
}

const uint8_t* GgufFile::raw(const std::string& name) const {
  return map_->data() + data_offset_ + info(name).offset;
}

at::Tensor GgufFile::load(const std::string& name, at::ScalarType dtype) const {
  const auto& t = info(name);
  if (!at::isFloatingType(dtype))
    fail(path_, "tensor `" + name + "`: load() dequantizes to a floating dtype, got " + c10::toString(dtype));
  const uint8_t* src = raw(name);
  const int64_t row = t.ne[0];
  const int64_t row_bytes = row / ggml_block_size(t.type) * ggml_type_bytes(t.type);
  const int64_t rows = static_cast<int64_t>(t.nbytes) / row_bytes;
  at::Tensor out = at::empty(t.shape(), at::kFloat);
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) dequantize_row(t.type, src + r * row_bytes, dst + r * row, row);
  });
  return dtype == at::kFloat ? out : out.to(dtype);
}

}  // namespace sparge::models

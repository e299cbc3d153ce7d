// safetensors reading and writing (see safetensors.h).
#include "sparge/models/safetensors.h"

#include "sparge/models/mapped_file.h"

#include "sparge/posix_fs.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace sparge::models {
namespace {

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {{"F64", at::kDouble},
                                 {"F32", at::kFloat},
                                 {"F16", at::kHalf},
                                 {"BF16", at::kBFloat16},
                                 {"I64", at::kLong},
                                 {"I32", at::kInt},
                                 {"I16", at::kShort},
                                 {"I8", at::kChar},
                                 {"U8", at::kByte},
                                 {"BOOL", at::kBool},
                                 {"F8_E4M3", at::kFloat8_e4m3fn}};
constexpr uint64_t kMaxHeader = 100ull << 20;  // the format's limit is 100 MB

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("safetensors file " + path + ": " + what);
}

at::ScalarType dtype_of(const std::string& path, const std::string& tensor, const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  fail(path, "tensor `" + tensor + "`: unsupported dtype \"" + name + "\"");
}

const char* name_of(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw std::invalid_argument(std::string("save_safetensors: unsupported dtype ") + c10::toString(t));
}

}  // namespace

SafetensorsFile open_safetensors(const std::string& path) {
  const auto map = MappedFile::open(path, "safetensors file");
  const uint64_t size = map->size();
  if (size < 8)
    fail(path, "truncated: " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map->data()[i];
  if (header_len > kMaxHeader || 8 + header_len > size)
    fail(path, "corrupted or incomplete: header length " + std::to_string(header_len) + " with a file of " +
                   std::to_string(size) + " bytes");
  const std::string header(reinterpret_cast<const char*>(map->data()) + 8, header_len);
  SafetensorsFile out;
  out.path = path;
  out.map = map;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = size - out.data_offset;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("corrupted header (not JSON): ") + e.what());
  }
  if (!j.is_object()) fail(path, "corrupted header: expected a JSON object");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      if (v.is_object())
        for (const auto& [k, m] : v.items())
          out.metadata[k] = m.is_string() ? m.get<std::string>() : m.dump();
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(path, "tensor `" + name + "`: expected dtype, shape and data_offsets in the header");
    SafetensorsFile::Entry e;
    e.dtype = dtype_of(path, name, v.at("dtype").get<std::string>());
    uint64_t count = 1;
    for (const auto& d : v.at("shape")) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(path, "tensor `" + name + "`: bad shape");
      e.shape.push_back(d.get<int64_t>());
      count *= static_cast<uint64_t>(d.get<int64_t>());
    }
    const auto& off = v.at("data_offsets");
    if (!off.is_array() || off.size() != 2)
      fail(path, "tensor `" + name + "`: data_offsets must be [begin, end]");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    const uint64_t bytes = count * c10::elementSize(e.dtype);
    if (e.end < e.begin || e.end - e.begin != bytes)
      fail(path, "tensor `" + name + "`: data_offsets [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) + ") do not hold its " + std::to_string(bytes) + " bytes");
    if (e.end > data_size)
      fail(path, "corrupted or incomplete: tensor `" + name + "` ends at byte " + std::to_string(e.end) +
                     " of a data section of " + std::to_string(data_size));
    ranges.emplace_back(e.begin, e.end);
    out.entries[name] = e;
    out.names.push_back(name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(path, "corrupted: tensors overlap in the data section");
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const {
  return entries.count(name) > 0;
}

at::Tensor SafetensorsFile::load(const std::string& name) const {
  const auto it = entries.find(name);
  if (it == entries.end()) fail(path, "tensor `" + name + "` not found");
  const auto& e = it->second;
  auto t = at::empty(e.shape, at::TensorOptions(e.dtype));
  if (map == nullptr || data_offset + e.end > map->size())
    fail(path, "tensor `" + name + "`: outside the mapped file (the file changed or was truncated)");
  if (e.end > e.begin) std::memcpy(t.data_ptr(), map->data() + data_offset + e.begin, e.end - e.begin);
  return t;
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const auto c = t.contiguous().cpu();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", name_of(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(c);
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h.push_back(' ');  // align the data section to 8 bytes
  std::ofstream f(path + ".tmp", std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("save_safetensors: cannot write " + path);
  const uint64_t len = h.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((len >> (8 * i)) & 0xff));
  f << h;
  for (const auto& c : data)
    f.write(static_cast<const char*>(c.data_ptr()),
            static_cast<std::streamsize>(c.numel() * c.element_size()));
  f.close();
  if (std::rename((path + ".tmp").c_str(), path.c_str()) != 0)
    throw std::runtime_error("save_safetensors: cannot rename to " + path);
}

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  namespace fs = std::filesystem;
  SafetensorsCheckpoint c;
  c.path_ = path;
  fs::path p(path);
  if (posix::exists(path) && !posix::is_file(path)) {
    if (posix::exists(p / "model.safetensors.index.json"))
      p /= "model.safetensors.index.json";
    else if (posix::exists(p / "model.safetensors"))
      p /= "model.safetensors";
    else
      throw std::runtime_error(
          "safetensors checkpoint " + path +
          ": the directory has neither model.safetensors nor model.safetensors.index.json");
  }
  if (!posix::exists(p)) throw std::runtime_error("safetensors checkpoint " + p.string() + ": no such file");
  if (p.extension() != ".json") {
    c.shards_.push_back(open_safetensors(p.string()));
    for (const auto& n : c.shards_[0].names) c.where_[n] = 0;
    return c;
  }
  nlohmann::json index;
  try {
    std::ifstream f(p);
    index = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("safetensors index " + p.string() + ": not JSON: " + e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw std::runtime_error("safetensors index " + p.string() +
                             ": expected an object with a weight_map object");
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string())
      throw std::runtime_error("safetensors index " + p.string() + ": weight_map[`" + tensor +
                               "`] is not a string");
    const auto name = file.get<std::string>();
    auto it = shard_of_file.find(name);
    if (it == shard_of_file.end()) {
      const fs::path shard = p.parent_path() / name;
      if (!posix::exists(shard))
        throw std::runtime_error("safetensors index " + p.string() + ": shard " + shard.string() +
                                 " of tensor `" + tensor + "` is missing");
      it = shard_of_file.emplace(name, c.shards_.size()).first;
      c.shards_.push_back(open_safetensors(shard.string()));
    }
    if (!c.shards_[it->second].contains(tensor))
      throw std::runtime_error("safetensors index " + p.string() + ": tensor `" + tensor +
                               "` is not in its shard " + c.shards_[it->second].path);
    c.where_[tensor] = it->second;
  }
  for (size_t s = 0; s < c.shards_.size(); ++s)
    for (const auto& n : c.shards_[s].names)
      if (const auto w = c.where_.find(n); w != c.where_.end() && w->second != s)
        throw std::runtime_error("safetensors index " + p.string() + ": tensor `" + n +
                                 "` is in two shards (" + c.shards_[s].path + " and " +
                                 c.shards_[w->second].path + ")");
  return c;
}

const SafetensorsFile::Entry& SafetensorsCheckpoint::entry(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end())
    throw std::runtime_error("safetensors checkpoint " + path_ + ": tensor `" + name + "` not found");
  return shards_[it->second].entries.at(name);
}

at::Tensor SafetensorsCheckpoint::load(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end())
    throw std::runtime_error("safetensors checkpoint " + path_ + ": tensor `" + name + "` not found");
  return shards_[it->second].load(name);
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, s] : where_) out.push_back(n);
  return out;
}

}  // namespace sparge::models

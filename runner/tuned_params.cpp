// The tuned-parameter file (see tuned_params.h).
#include "tuned_params.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "posix_fs.h"
#include "spec.h"
#include "store.h"

namespace sparge::runner {
namespace {

using json = nlohmann::json;

constexpr const char* kFormat = "sparge-tuned-params";
constexpr int kVersion = 1;

std::string hex16(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

json head_json(int64_t h, const HeadParams& p) {
  return {{"head", h},
          {"simthreshd1", p.simthreshd1},
          {"cdfthreshd", p.cdfthreshd},
          {"pvthreshd", std::isfinite(p.pvthreshd) ? json(p.pvthreshd) : json(nullptr)},
          {"dense", p.dense},
          {"sparsity", p.sparsity},
          {"l1", p.l1},
          {"l1_with_stage2", p.l1_with_stage2}};
}

json layers_json(const std::vector<TunedLayer>& layers) {
  json a = json::array();
  for (const auto& l : layers) {
    json heads = json::array();
    for (size_t h = 0; h < l.heads.size(); ++h)
      heads.push_back(head_json(static_cast<int64_t>(h), l.heads[h]));
    a.push_back({{"layer", l.layer},
                 {"seconds", l.seconds},
                 {"passes", l.passes},
                 {"head_evals", l.head_evals},
                 {"heads", heads}});
  }
  return a;
}

std::string checksum_of(const json& layers) {
  return hex16(fnv1a64(layers.dump()));
}

// Typed field access with errors naming the file and the field's path.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw std::invalid_argument("tuned parameter file " + path_ + ": `" + field + "` " + what);
  }
  const json& get(const json& obj, const std::string& key, const std::string& where) const {
    if (!obj.is_object()) fail(where, "must be an object");
    const auto it = obj.find(key);
    if (it == obj.end()) fail(where.empty() ? key : where + "." + key, "is missing");
    return *it;
  }
  double number(const json& obj, const std::string& key, const std::string& where, double lo,
                double hi) const {
    const auto& v = get(obj, key, where);
    const auto name = where.empty() ? key : where + "." + key;
    if (!v.is_number()) fail(name, "must be a number, got " + v.dump());
    const double x = v.get<double>();
    if (!(x >= lo && x <= hi)) fail(name, "must be in [" + fmt(lo) + ", " + fmt(hi) + "], got " + v.dump());
    return x;
  }
  int64_t integer(const json& obj, const std::string& key, const std::string& where, int64_t lo) const {
    const auto& v = get(obj, key, where);
    const auto name = where.empty() ? key : where + "." + key;
    if (!v.is_number_integer()) fail(name, "must be an integer, got " + v.dump());
    const auto x = v.get<int64_t>();
    if (x < lo) fail(name, "must be >= " + std::to_string(lo) + ", got " + v.dump());
    return x;
  }
  bool boolean(const json& obj, const std::string& key, const std::string& where) const {
    const auto& v = get(obj, key, where);
    if (!v.is_boolean())
      fail(where.empty() ? key : where + "." + key, "must be true or false, got " + v.dump());
    return v.get<bool>();
  }
  std::string text(const json& obj, const std::string& key, const std::string& where) const {
    const auto& v = get(obj, key, where);
    if (!v.is_string()) fail(where.empty() ? key : where + "." + key, "must be a string, got " + v.dump());
    return v.get<std::string>();
  }

 private:
  static std::string fmt(double x) {
    std::ostringstream s;
    s << x;
    return s.str();
  }
  std::string path_;
};

}  // namespace

const TunedLayer* TunedParams::find(int64_t layer) const {
  for (const auto& l : layers)
    if (l.layer == layer) return &l;
  return nullptr;
}

SpargeConfig TunedParams::layer_config(int64_t layer, int64_t heads_q, const std::string& path) const {
  const auto* l = find(layer);
  if (l == nullptr) {
    std::string have;
    for (const auto& x : layers) have += (have.empty() ? "" : ", ") + std::to_string(x.layer);
    throw std::invalid_argument("tuned parameter file " + path + ": no entry for layer " +
                                std::to_string(layer) + " (it has layers " + (have.empty() ? "none" : have) +
                                ")");
  }
  if (heads_q > 0 && static_cast<int64_t>(l->heads.size()) != heads_q)
    throw std::invalid_argument("tuned parameter file " + path + ": layer " + std::to_string(layer) +
                                " has " + std::to_string(l->heads.size()) +
                                " heads, the attention call has " + std::to_string(heads_q) +
                                " query heads (tuned for another model?)");
  return apply_tuned(config, l->heads);
}

json to_json(const TunedParams& p) {
  json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["model"] = p.model;
  j["targets"] = {{"l1", p.targets.l1},
                  {"l2", p.targets.l2},
                  {"dense_below", p.targets.dense_below},
                  {"tau_steps", p.targets.tau_steps},
                  {"lambda_steps", p.targets.lambda_steps},
                  {"lambda_max", p.targets.lambda_max}};
  j["calibration"] = p.calibration;
  j["config"] = {{"block_q", p.config.block_q},
                 {"block_k", p.config.block_k},
                 {"quant", std::string(to_string(p.config.quant))},
                 {"stage2_group_rows", p.config.stage2_group_rows},
                 {"attention_sink", p.config.attention_sink},
                 {"keep_crossing", p.config.cdf_keep_crossing}};
  j["backend"] = p.backend;
  j["complete"] = p.complete;
  j["provenance"] = p.provenance;
  j["layers"] = layers_json(p.layers);
  j["checksum"] = checksum_of(j["layers"]);
  return j;
}

TunedParams tuned_from_json(const json& j, const std::string& path) {
  const Reader r(path);
  if (!j.is_object()) r.fail("(top level)", "must be a JSON object");
  if (!j.contains("format") || j["format"] != kFormat)
    r.fail("format", std::string("must be \"") + kFormat + "\" (not a tuned parameter file?)");
  const auto version = r.integer(j, "version", "", 1);
  if (version != kVersion)
    r.fail("version",
           "is " + std::to_string(version) + ", this build reads version " + std::to_string(kVersion));
  TunedParams p;
  p.model = r.get(j, "model", "");
  if (!p.model.is_object()) r.fail("model", "must be an object");
  p.calibration = r.get(j, "calibration", "");
  if (!p.calibration.is_object()) r.fail("calibration", "must be an object");
  if (j.contains("provenance")) p.provenance = j["provenance"];
  const auto& t = r.get(j, "targets", "");
  p.targets.l1 = r.number(t, "l1", "targets", 1e-12, 1e9);
  p.targets.l2 = r.number(t, "l2", "targets", p.targets.l1, 1e9);
  p.targets.dense_below = r.number(t, "dense_below", "targets", 0.0, 1.0);
  p.targets.tau_steps = static_cast<int>(r.integer(t, "tau_steps", "targets", 1));
  p.targets.lambda_steps = static_cast<int>(r.integer(t, "lambda_steps", "targets", 0));
  p.targets.lambda_max = r.number(t, "lambda_max", "targets", 1e-12, 1e9);
  const auto& c = r.get(j, "config", "");
  p.config.block_q = r.integer(c, "block_q", "config", 1);
  p.config.block_k = r.integer(c, "block_k", "config", 1);
  try {
    p.config.quant = parse_quant_mode(r.text(c, "quant", "config"));
  } catch (const std::invalid_argument&) {
    r.fail("config.quant", "must be none, int8 or int8_fp8, got " + c["quant"].dump());
  }
  p.config.stage2_group_rows = r.integer(c, "stage2_group_rows", "config", 0);
  p.config.attention_sink = r.boolean(c, "attention_sink", "config");
  p.config.cdf_keep_crossing = r.boolean(c, "keep_crossing", "config");
  p.backend = r.text(j, "backend", "");
  p.complete = r.boolean(j, "complete", "");
  const auto& layers = r.get(j, "layers", "");
  if (!layers.is_array()) r.fail("layers", "must be a list");
  p.checksum = checksum_of(layers);
  if (j.contains("checksum")) {
    if (!j["checksum"].is_string()) r.fail("checksum", "must be a string");
    const auto want = j["checksum"].get<std::string>(), &got = p.checksum;
    if (want != got)
      r.fail("checksum",
             "is " + want + " but the layers hash to " + got +
                 ": the file was changed or corrupted after `sparge tune` wrote it (to edit values "
                 "on purpose, delete the checksum field)");
  }
  std::set<int64_t> seen;
  int64_t heads = -1;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto w = "layers[" + std::to_string(i) + "]";
    const auto& l = layers[i];
    TunedLayer tl;
    tl.layer = r.integer(l, "layer", w, 0);
    if (!seen.insert(tl.layer).second) r.fail(w + ".layer", "repeats layer " + std::to_string(tl.layer));
    tl.seconds = r.number(l, "seconds", w, 0.0, 1e12);
    tl.passes = r.integer(l, "passes", w, 0);
    tl.head_evals = r.integer(l, "head_evals", w, 0);
    const auto& hs = r.get(l, "heads", w);
    if (!hs.is_array() || hs.empty()) r.fail(w + ".heads", "must be a non-empty list");
    if (heads < 0) heads = static_cast<int64_t>(hs.size());
    if (static_cast<int64_t>(hs.size()) != heads)
      r.fail(w + ".heads",
             "has " + std::to_string(hs.size()) + " entries, layers[0] has " + std::to_string(heads));
    for (size_t h = 0; h < hs.size(); ++h) {
      const auto hw = w + ".heads[" + std::to_string(h) + "]";
      const auto& e = hs[h];
      if (r.integer(e, "head", hw, 0) != static_cast<int64_t>(h))
        r.fail(hw + ".head", "must be " + std::to_string(h));
      HeadParams hp;
      hp.simthreshd1 = r.number(e, "simthreshd1", hw, -1.0, 1.0);
      hp.cdfthreshd = r.number(e, "cdfthreshd", hw, 0.0, 1.0);
      const auto& pv = r.get(e, "pvthreshd", hw);
      hp.pvthreshd = pv.is_null() ? kNoStage2 : r.number(e, "pvthreshd", hw, 1e-12, 1e12);
      hp.dense = r.boolean(e, "dense", hw);
      hp.sparsity = r.number(e, "sparsity", hw, 0.0, 1.0);
      hp.l1 = r.number(e, "l1", hw, 0.0, 1e12);
      hp.l1_with_stage2 = r.number(e, "l1_with_stage2", hw, 0.0, 1e12);
      tl.heads.push_back(hp);
    }
    p.layers.push_back(std::move(tl));
  }
  return p;
}

void save_tuned_params(const std::string& path, const TunedParams& p) {
  const auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) posix::make_dirs(path.substr(0, slash));
  atomic_write(path, to_json(p).dump(1) + "\n");
}

TunedParams load_tuned_params(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    throw std::invalid_argument(
        "tuned parameter file " + path +
        ": cannot be read (missing? `sparge tune SPEC` writes it, SPEC the tune spec whose "
        "output it is)");
  std::stringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw std::invalid_argument("tuned parameter file " + path + ": not valid JSON (byte " +
                                std::to_string(e.byte) + "; truncated or corrupted?)");
  }
  return tuned_from_json(j, path);
}

std::string model_hash(const std::string& weights) {
  std::vector<std::string> files;
  struct stat st {};
  if (::stat(weights.c_str(), &st) != 0)
    throw std::invalid_argument("model weights " + weights + ": not found");
  if (S_ISDIR(st.st_mode)) {
    for (const char* ext : {".safetensors", ".gguf", ".bin"})
      for (const auto& n : posix::list_dir(weights, ext)) files.push_back(weights + "/" + n);
    std::sort(files.begin(), files.end());
    if (files.empty())
      throw std::invalid_argument("model weights " + weights + ": no weight files in the directory");
  } else {
    files.push_back(weights);
  }
  constexpr int64_t kEdge = int64_t{16} << 20;
  std::string buf;
  for (const auto& file : files) {
    std::ifstream f(file, std::ios::binary);
    if (!f) throw std::invalid_argument("model weights " + file + ": cannot be read");
    f.seekg(0, std::ios::end);
    const int64_t size = f.tellg();
    const auto base = file.substr(file.rfind('/') == std::string::npos ? 0 : file.rfind('/') + 1);
    buf += base + ":" + std::to_string(size) + ":";
    const auto take = [&](int64_t at, int64_t n) {
      std::string chunk(static_cast<size_t>(n), '\0');
      f.seekg(at);
      f.read(chunk.data(), n);
      buf += hex16(fnv1a64(chunk));
    };
    take(0, std::min(size, kEdge));
    if (size > kEdge) take(std::max(kEdge, size - kEdge), std::min(kEdge, size - kEdge));
  }
  return "fnv1a64:" + hex16(fnv1a64(buf));
}

}  // namespace sparge::runner

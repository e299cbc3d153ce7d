// String conversions of the configuration enums.
#include "sparge/config.h"

#include "sparge/error.h"

namespace sparge {

std::string_view to_string(Layout v) {
  return v == Layout::kHND ? "HND" : "NHD";
}
std::string_view to_string(SelectMode v) {
  return v == SelectMode::kCdf ? "cdf" : "topk";
}
std::string_view to_string(QuantMode v) {
  switch (v) {
    case QuantMode::kNone:
      return "none";
    case QuantMode::kInt8:
      return "int8";
    case QuantMode::kInt8Fp8:
      return "int8_fp8";
  }
  return "?";
}

Layout parse_layout(std::string_view name) {
  if (name == "HND") return Layout::kHND;
  if (name == "NHD") return Layout::kNHD;
  detail::fail("parse_layout", "argument `layout`: expected \"HND\" or \"NHD\", got \"", name, "\"");
}

SelectMode parse_select_mode(std::string_view name) {
  if (name == "cdf") return SelectMode::kCdf;
  if (name == "topk") return SelectMode::kTopk;
  detail::fail("parse_select_mode", "argument `select`: expected \"cdf\" or \"topk\", got \"", name, "\"");
}

QuantMode parse_quant_mode(std::string_view name) {
  if (name == "none") return QuantMode::kNone;
  if (name == "int8") return QuantMode::kInt8;
  if (name == "int8_fp8") return QuantMode::kInt8Fp8;
  detail::fail("parse_quant_mode", "argument `quant`: expected \"none\", \"int8\" or \"int8_fp8\", got \"",
               name, "\"");
}

}  // namespace sparge

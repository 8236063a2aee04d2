// GemmProblem <-> plan.json "gemm" object, and the registry keys built from it
// (docs/CONTRACTS.md §2). The JSON spelling here is the contract realize reads.
#include <stdexcept>

#include <fmt/format.h>

#include "fact/rules.hpp"

namespace fact {

using nlohmann::json;

std::string size_bucket(int64_t size) {
  int64_t p = 1;
  while (p < size) p <<= 1;
  if (p >= (int64_t{1} << 20)) return fmt::format("{}M", p >> 20);
  if (p >= 1024) return fmt::format("{}k", p >> 10);
  return std::to_string(p);
}

std::string GemmProblem::problem_key() const {
  return fmt::format("gemm:{}:b{}:m{}:n{}:k{}:a={}:b={}:ep={}", dtype_short(element_a), batch, m, n, k, a.layout,
                     b.layout, epilogue.kind);
}

std::string GemmProblem::shape_class() const {
  return fmt::format("gemm:{}:b{}:m{}:n{}:k{}", dtype_short(element_a), size_bucket(batch), size_bucket(m),
                     size_bucket(n), size_bucket(k));
}

json GemmProblem::to_json() const {
  auto operand = [](const GemmOperand& o) {
    json j{{"tensor", o.tensor}, {"layout", o.layout}, {"ld", o.ld}, {"batch_stride", o.batch_stride}};
    if (!o.order.empty()) j["order"] = o.order;
    return j;
  };
  json ep = {{"kind", epilogue.kind},
             {"tensor", epilogue.kind == "none" ? json(nullptr) : json(epilogue.tensor)},
             {"ld", epilogue.ld},
             {"batch_stride", epilogue.batch_stride},
             {"alpha", epilogue.alpha},
             {"beta", epilogue.beta}};
  return json{{"batch", batch},
              {"m", m},
              {"n", n},
              {"k", k},
              {"a", operand(a)},
              {"b", operand(b)},
              {"d", {{"tensor", d.tensor}, {"ld", d.ld}, {"batch_stride", d.batch_stride}}},
              {"epilogue", ep},
              {"element_a", dtype_name(element_a)},
              {"element_b", dtype_name(element_b)},
              {"element_d", dtype_name(element_d)}};
}

namespace {

const json& field(const json& j, const char* name, const std::string& where) {
  auto it = j.find(name);
  if (it == j.end()) throw std::runtime_error(fmt::format("gemm{}: field '{}' missing", where, name));
  return *it;
}

int64_t int_field(const json& j, const char* name, const std::string& where) {
  const json& v = field(j, name, where);
  if (!v.is_number_integer()) throw std::runtime_error(fmt::format("gemm{}: field '{}' is not an integer", where, name));
  return v.get<int64_t>();
}

std::string string_field(const json& j, const char* name, const std::string& where) {
  const json& v = field(j, name, where);
  if (!v.is_string()) throw std::runtime_error(fmt::format("gemm{}: field '{}' is not a string", where, name));
  return v.get<std::string>();
}

DType dtype_field(const json& j, const char* name) {
  std::string s = string_field(j, name, "");
  auto d = parse_dtype(s);
  if (!d) throw std::runtime_error(fmt::format("gemm: field '{}' has unknown dtype '{}'", name, s));
  return *d;
}

GemmOperand operand_from(const json& j, const char* name) {
  const std::string where = std::string(".") + name;
  const json& o = field(j, name, "");
  GemmOperand out;
  out.tensor = string_field(o, "tensor", where);
  out.layout = string_field(o, "layout", where);
  if (out.layout != "row" && out.layout != "col") {
    throw std::runtime_error(fmt::format("gemm{}: layout '{}' is neither 'row' nor 'col'", where, out.layout));
  }
  out.ld = int_field(o, "ld", where);
  out.batch_stride = int_field(o, "batch_stride", where);
  if (o.contains("order")) {
    out.order = string_field(o, "order", where);
    if (out.order != "rows_cols" && out.order != "cols_rows")
      throw std::runtime_error(fmt::format("gemm{}: order '{}' is neither 'rows_cols' nor 'cols_rows'", where, out.order));
  }
  return out;
}

}  // namespace

GemmProblem GemmProblem::from_json(const json& j) {
  if (!j.is_object()) throw std::runtime_error("gemm: expected an object");
  GemmProblem p;
  p.batch = int_field(j, "batch", "");
  p.m = int_field(j, "m", "");
  p.n = int_field(j, "n", "");
  p.k = int_field(j, "k", "");
  p.a = operand_from(j, "a");
  p.b = operand_from(j, "b");
  const json& d = field(j, "d", "");
  p.d.tensor = string_field(d, "tensor", ".d");
  p.d.ld = int_field(d, "ld", ".d");
  p.d.batch_stride = int_field(d, "batch_stride", ".d");
  const json& ep = field(j, "epilogue", "");
  p.epilogue.kind = string_field(ep, "kind", ".epilogue");
  if (p.epilogue.kind != "none" && p.epilogue.kind != "bias" && p.epilogue.kind != "c") {
    throw std::runtime_error(fmt::format("gemm.epilogue: unknown kind '{}'", p.epilogue.kind));
  }
  const json& t = field(ep, "tensor", ".epilogue");
  p.epilogue.tensor = t.is_string() ? t.get<std::string>() : "";
  p.epilogue.ld = int_field(ep, "ld", ".epilogue");
  p.epilogue.batch_stride = int_field(ep, "batch_stride", ".epilogue");
  p.epilogue.alpha = field(ep, "alpha", ".epilogue").get<double>();
  p.epilogue.beta = field(ep, "beta", ".epilogue").get<double>();
  p.element_a = dtype_field(j, "element_a");
  p.element_b = dtype_field(j, "element_b");
  p.element_d = dtype_field(j, "element_d");
  return p;
}

}  // namespace fact

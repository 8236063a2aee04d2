// DType and TensorKind spellings: the one table that maps IR names to enums.
#include <array>

#include "fact/ir.hpp"

namespace fact {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  const char* short_name;
  int bytes;
  bool floating;
};

constexpr std::array<DTypeInfo, 7> kDTypes{{
    {DType::Float32, "float32", "f32", 4, true},
    {DType::Float16, "float16", "f16", 2, true},
    {DType::BFloat16, "bfloat16", "bf16", 2, true},
    {DType::Float64, "float64", "f64", 8, true},
    {DType::Int64, "int64", "i64", 8, false},
    {DType::Int32, "int32", "i32", 4, false},
    {DType::Bool, "bool", "b8", 1, false},
}};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  return kDTypes[0];  // unreachable: every enumerator is in the table
}

}  // namespace

std::optional<DType> parse_dtype(const std::string& name) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  return std::nullopt;
}

const char* dtype_name(DType dtype) { return info(dtype).name; }
const char* dtype_short(DType dtype) { return info(dtype).short_name; }
int dtype_bytes(DType dtype) { return info(dtype).bytes; }
bool is_floating(DType dtype) { return info(dtype).floating; }

const char* tensor_kind_name(TensorKind kind) {
  switch (kind) {
    case TensorKind::Input: return "input";
    case TensorKind::Param: return "param";
    case TensorKind::Buffer: return "buffer";
    case TensorKind::Const: return "const";
    case TensorKind::Value: return "value";
  }
  return "value";
}

}  // namespace fact

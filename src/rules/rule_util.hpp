// Private helpers shared by the transformer-block rules (attention, epilogue chain,
// layernorm): reading python scalars captured as const tensors, op-spelling tests
// for the ops capture keeps as "other:<qualified name>", and dropout-as-identity.
#pragma once

#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "fact/rules.hpp"

namespace fact::rules_detail {

// A numeric JSON value; capture writes inf/nan as the strings "inf", "-inf", "nan".
inline std::optional<double> json_number(const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  return std::nullopt;
}

// The value of a python scalar argument (a const tensor); nullopt for a real tensor.
inline std::optional<double> const_scalar(const Graph& g, const std::string& id) {
  const Tensor* t = g.find_tensor(id);
  if (!t || t->kind != TensorKind::Const) return std::nullopt;
  return json_number(t->value);
}

inline bool is_float_dtype(DType d) { return d == DType::Float32 || d == DType::Float16 || d == DType::BFloat16; }

// An "other:" node's positional argument `pos` or keyword `name` (null when absent).
inline nlohmann::json other_arg(const Node& n, size_t pos, const char* name) {
  auto kw = n.attrs.find("kwargs");
  if (kw != n.attrs.end() && kw->is_object() && kw->contains(name)) return (*kw)[name];
  auto args = n.attrs.find("args");
  if (args != n.attrs.end() && args->is_array() && pos < args->size()) return (*args)[pos];
  return nullptr;
}

// The tensor id an "other:" argument names ({"tensor": id}), "" otherwise.
inline std::string other_tensor_arg(const Node& n, size_t pos, const char* name) {
  nlohmann::json a = other_arg(n, pos, name);
  if (a.is_object() && a.contains("tensor") && a["tensor"].is_string()) return a["tensor"].get<std::string>();
  return "";
}

inline bool op_is_any(const std::string& op, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (op == n) return true;
  }
  return false;
}

inline bool is_dropout_op(const std::string& op) {
  return op_is_any(op, {"dropout", "other:torch.nn.functional.dropout", "other:torch.dropout",
                        "other:torch.nn.Dropout"});
}

// A dropout that is the identity: p == 0, or training == False recorded in the IR.
// nn.Dropout modules are captured without p, so they are rejected with that reason.
inline bool dropout_is_identity(const Node& n, std::string* why) {
  if (n.op == "other:torch.nn.Dropout") {
    *why = fmt::format("nn.Dropout module '{}': the IR does not record its p, so it cannot be proven the identity "
                       "(use F.dropout(p=0.0) or have capture record p)", n.id);
    return false;
  }
  nlohmann::json p = n.op == "dropout" ? (n.attrs.contains("p") ? n.attrs["p"] : nlohmann::json(nullptr))
                                       : other_arg(n, 1, "p");
  nlohmann::json training = n.op == "dropout" ? (n.attrs.contains("training") ? n.attrs["training"] : nlohmann::json(nullptr))
                                              : other_arg(n, 2, n.op == "other:torch.dropout" ? "train" : "training");
  auto pv = json_number(p);
  if (pv && *pv == 0.0) return true;
  if (training.is_boolean() && !training.get<bool>()) return true;
  *why = fmt::format("dropout '{}' has p={} and training={}: not the identity", n.id, p.dump(), training.dump());
  return false;
}

}  // namespace fact::rules_detail

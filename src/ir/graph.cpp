// Graph IR parsing and validation (docs/CONTRACTS.md §1).
// Every error names the file, then the tensor or node, then the field, so a
// capture bug can be found from the message alone.
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "fact/ir.hpp"

namespace fact {

using nlohmann::json;

bool Tensor::has_dynamic_dim() const {
  for (int64_t d : shape) {
    if (d < 0) return true;
  }
  return false;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    n *= d;
  }
  return n;
}

bool Tensor::is_contiguous() const {
  if (has_dynamic_dim() || strides.size() != shape.size()) return false;
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  int64_t running = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = running;
    running *= shape[i] > 0 ? shape[i] : 1;
  }
  return strides;
}

std::string format_dims(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ", ";
    out += dims[i] == kDynamicDim ? std::string("?") : std::to_string(dims[i]);
  }
  return out + "]";
}

const Tensor* Graph::find_tensor(const std::string& id) const {
  auto it = tensors.find(id);
  return it == tensors.end() ? nullptr : &it->second;
}

const Tensor& Graph::tensor(const std::string& id) const {
  const Tensor* t = find_tensor(id);
  if (!t) throw IrError(fmt::format("{}: no tensor '{}'", path.empty() ? "<graph>" : path, id));
  return *t;
}

const Node* Graph::find_node(const std::string& id) const {
  auto it = node_pos_.find(id);
  return it == node_pos_.end() ? nullptr : &nodes[it->second];
}

size_t Graph::node_index(const std::string& node_id) const {
  auto it = node_pos_.find(node_id);
  if (it == node_pos_.end()) {
    throw IrError(fmt::format("{}: no node '{}'", path.empty() ? "<graph>" : path, node_id));
  }
  return it->second;
}

const Node* Graph::producer(const std::string& tensor_id) const {
  auto it = producer_.find(tensor_id);
  return it == producer_.end() ? nullptr : &nodes[it->second];
}

std::vector<const Node*> Graph::consumers(const std::string& tensor_id) const {
  std::vector<const Node*> out;
  auto it = consumers_.find(tensor_id);
  if (it == consumers_.end()) return out;
  for (size_t i : it->second) out.push_back(&nodes[i]);
  return out;
}

bool Graph::is_graph_output(const std::string& tensor_id) const {
  for (const auto& out : outputs) {
    if (out == tensor_id) return true;
  }
  return false;
}

int Graph::use_count(const std::string& tensor_id) const {
  auto it = consumers_.find(tensor_id);
  int readers = it == consumers_.end() ? 0 : static_cast<int>(it->second.size());
  return readers + (is_graph_output(tensor_id) ? 1 : 0);
}

bool Graph::single_use(const std::string& tensor_id) const {
  return use_count(tensor_id) == 1 && !is_graph_output(tensor_id);
}

void Graph::index() {
  node_pos_.clear();
  producer_.clear();
  consumers_.clear();
  for (size_t i = 0; i < nodes.size(); ++i) {
    node_pos_[nodes[i].id] = i;
    for (const auto& out : nodes[i].outputs) producer_[out] = i;
    std::set<std::string> seen;
    for (const auto& in : nodes[i].inputs) {
      if (seen.insert(in).second) consumers_[in].push_back(i);
    }
  }
}

namespace {

// Builds error messages with the file name and the object being read.
struct Where {
  std::string file;
  std::string object;  // "tensor 'x'", "node 'mm'", "" for the top level

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    std::string msg = file + ": ";
    if (!object.empty()) msg += object + ": ";
    msg += "field '" + field + "': " + what;
    throw IrError(msg);
  }
};

const char* json_type(const json& j) { return j.type_name(); }

const json& require(const json& obj, const char* field, const Where& where) {
  auto it = obj.find(field);
  if (it == obj.end()) where.fail(field, "missing");
  return *it;
}

std::string require_string(const json& obj, const char* field, const Where& where) {
  const json& v = require(obj, field, where);
  if (!v.is_string()) where.fail(field, fmt::format("expected a string, got {}", json_type(v)));
  return v.get<std::string>();
}

std::vector<std::string> string_list(const json& obj, const char* field, const Where& where) {
  const json& v = require(obj, field, where);
  if (!v.is_array()) where.fail(field, fmt::format("expected an array of ids, got {}", json_type(v)));
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      where.fail(field, fmt::format("entry {} is {}, expected a tensor id string", i, json_type(v[i])));
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

// Dimensions: non-negative integers; null marks a dynamic dimension.
std::vector<int64_t> dims(const json& obj, const char* field, const Where& where, bool allow_negative) {
  const json& v = require(obj, field, where);
  if (!v.is_array()) where.fail(field, fmt::format("expected an array of integers, got {}", json_type(v)));
  std::vector<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].is_null()) {
      out.push_back(kDynamicDim);
    } else if (v[i].is_number_integer()) {
      int64_t d = v[i].get<int64_t>();
      if (d < 0 && !allow_negative) where.fail(field, fmt::format("entry {} is negative ({})", i, d));
      out.push_back(d);
    } else {
      where.fail(field, fmt::format("entry {} is {}, expected an integer or null", i, json_type(v[i])));
    }
  }
  return out;
}

Tensor parse_tensor(const std::string& id, const json& j, const std::string& file) {
  Where where{file, fmt::format("tensor '{}'", id)};
  if (!j.is_object()) where.fail("tensors", fmt::format("entry is {}, expected an object", json_type(j)));
  Tensor t;
  t.id = id;
  std::string kind = require_string(j, "kind", where);
  if (kind == "input") t.kind = TensorKind::Input;
  else if (kind == "param") t.kind = TensorKind::Param;
  else if (kind == "buffer") t.kind = TensorKind::Buffer;
  else if (kind == "const") t.kind = TensorKind::Const;
  else if (kind == "value") t.kind = TensorKind::Value;
  else where.fail("kind", fmt::format("unknown kind '{}' (input, param, buffer, const, value)", kind));

  std::string dtype = require_string(j, "dtype", where);
  auto parsed = parse_dtype(dtype);
  if (!parsed) {
    where.fail("dtype", fmt::format("unknown dtype '{}' (float32 float16 bfloat16 float64 int64 int32 bool)", dtype));
  }
  t.dtype = *parsed;
  t.shape = dims(j, "shape", where, false);
  t.strides = dims(j, "strides", where, false);
  if (t.strides.size() != t.shape.size()) {
    where.fail("strides", fmt::format("{} entries for a shape of rank {} {}", t.strides.size(), t.shape.size(),
                                      format_dims(t.shape)));
  }
  switch (t.kind) {
    case TensorKind::Input: {
      const json& idx = require(j, "index", where);
      if (!idx.is_number_integer() || idx.get<int64_t>() < 0) {
        where.fail("index", "expected a non-negative integer (position in forward())");
      }
      t.index = idx.get<int>();
      break;
    }
    case TensorKind::Param:
    case TensorKind::Buffer:
      t.target = require_string(j, "target", where);
      break;
    case TensorKind::Const:
      t.value = require(j, "value", where);
      break;
    case TensorKind::Value:
      break;
  }
  return t;
}

Node parse_node(size_t position, const json& j, const std::string& file) {
  Where where{file, fmt::format("node #{}", position)};
  if (!j.is_object()) where.fail("nodes", fmt::format("entry is {}, expected an object", json_type(j)));
  Node n;
  n.id = require_string(j, "id", where);
  where.object = fmt::format("node '{}'", n.id);
  n.op = require_string(j, "op", where);
  if (n.op.empty()) where.fail("op", "empty op name");
  n.inputs = string_list(j, "inputs", where);
  n.outputs = string_list(j, "outputs", where);
  if (n.outputs.empty()) where.fail("outputs", "a node must produce at least one tensor");
  if (auto it = j.find("attrs"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) where.fail("attrs", fmt::format("expected an object, got {}", json_type(*it)));
    n.attrs = *it;
  }
  if (auto it = j.find("origin"); it != j.end() && it->is_string()) n.origin = it->get<std::string>();
  return n;
}

}  // namespace

Graph parse_graph(const json& doc, const std::string& origin) {
  Where top{origin, ""};
  if (!doc.is_object()) throw IrError(fmt::format("{}: expected a JSON object at the top level, got {}", origin, json_type(doc)));
  auto version_it = doc.find("fact_ir");
  if (version_it == doc.end()) top.fail("fact_ir", "missing: not a FACT graph IR file");
  if (!version_it->is_number_integer()) top.fail("fact_ir", "expected an integer version");
  int version = version_it->get<int>();
  if (version != kIrVersion) {
    top.fail("fact_ir", fmt::format("version {} is not supported (this fact reads version {}){}", version, kIrVersion,
                                    version > kIrVersion ? ": upgrade fact" : ""));
  }

  Graph g;
  g.version = version;
  g.path = origin;
  if (auto it = doc.find("module"); it != doc.end() && it->is_string()) g.module = it->get<std::string>();
  if (auto it = doc.find("source"); it != doc.end() && it->is_string()) g.source = it->get<std::string>();
  if (auto it = doc.find("init_inputs"); it != doc.end()) g.init_inputs = *it;

  const json& tensors = require(doc, "tensors", top);
  if (!tensors.is_object()) top.fail("tensors", fmt::format("expected an object keyed by tensor id, got {}", json_type(tensors)));
  for (auto it = tensors.begin(); it != tensors.end(); ++it) {
    g.tensors.emplace(it.key(), parse_tensor(it.key(), it.value(), origin));
  }

  const json& nodes = require(doc, "nodes", top);
  if (!nodes.is_array()) top.fail("nodes", fmt::format("expected an array, got {}", json_type(nodes)));
  std::set<std::string> node_ids;
  std::map<std::string, std::string> produced_by;  // value tensor -> node id
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node n = parse_node(i, nodes[i], origin);
    Where where{origin, fmt::format("node '{}'", n.id)};
    if (!node_ids.insert(n.id).second) where.fail("id", "duplicate node id");
    for (const auto& in : n.inputs) {
      const Tensor* t = g.find_tensor(in);
      if (!t) where.fail("inputs", fmt::format("unknown tensor '{}'", in));
      if (t->kind == TensorKind::Value && !produced_by.count(in)) {
        where.fail("inputs", fmt::format("tensor '{}' is read before any node produces it", in));
      }
    }
    for (const auto& out : n.outputs) {
      const Tensor* t = g.find_tensor(out);
      if (!t) where.fail("outputs", fmt::format("unknown tensor '{}'", out));
      if (t->kind != TensorKind::Value) {
        where.fail("outputs", fmt::format("tensor '{}' has kind '{}'; node outputs must have kind 'value'", out,
                                          tensor_kind_name(t->kind)));
      }
      auto [it, inserted] = produced_by.emplace(out, n.id);
      if (!inserted) where.fail("outputs", fmt::format("tensor '{}' is already produced by node '{}'", out, it->second));
    }
    g.nodes.push_back(std::move(n));
  }
  for (const auto& [id, t] : g.tensors) {
    if (t.kind == TensorKind::Value && !produced_by.count(id)) {
      Where{origin, fmt::format("tensor '{}'", id)}.fail("kind", "kind 'value' but no node produces it");
    }
  }

  g.outputs = string_list(doc, "outputs", top);
  for (const auto& out : g.outputs) {
    if (!g.find_tensor(out)) top.fail("outputs", fmt::format("unknown tensor '{}'", out));
  }
  g.index();
  return g;
}

Graph load_graph(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IrError(fmt::format("{}: cannot open file", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  json doc;
  try {
    doc = json::parse(buffer.str());
  } catch (const json::parse_error& e) {
    throw IrError(fmt::format("{}: malformed JSON: {}", path, e.what()));
  }
  return parse_graph(doc, path);
}

}  // namespace fact

// The graph IR that capture writes and discover reads (docs/CONTRACTS.md §1).
// Contract: load_graph/parse_graph either return a fully validated Graph (every
// id resolves, every value tensor has exactly one producer that precedes its
// consumers) or throw IrError whose message names the file, the node or tensor,
// and the field. Nothing in here knows about CUDA or PyTorch.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fact {

inline constexpr int kIrVersion = 1;

enum class DType { Float32, Float16, BFloat16, Float64, Int64, Int32, Bool };

// "float32" <-> DType; nullopt for a name the IR does not define.
std::optional<DType> parse_dtype(const std::string& name);
const char* dtype_name(DType dtype);   // "float32"
const char* dtype_short(DType dtype);  // "f32", "f16", "bf16", "f64", "i64", "i32", "b8"
int dtype_bytes(DType dtype);
bool is_floating(DType dtype);

enum class TensorKind { Input, Param, Buffer, Const, Value };
const char* tensor_kind_name(TensorKind kind);

// A dimension the capture could not pin down (written as null in JSON).
inline constexpr int64_t kDynamicDim = -1;

struct Tensor {
  std::string id;
  std::vector<int64_t> shape;    // kDynamicDim for a dynamic dimension
  std::vector<int64_t> strides;  // elements, as eager PyTorch produces them
  DType dtype = DType::Float32;
  TensorKind kind = TensorKind::Value;
  int index = -1;                // kind == Input: position in forward()
  std::string target;            // kind == Param/Buffer: qualified attribute name
  nlohmann::json value;          // kind == Const: the python scalar

  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  bool has_dynamic_dim() const;
  int64_t numel() const;         // -1 when a dimension is dynamic
  // Row-major contiguous (size-1 dimensions may carry any stride, as in PyTorch).
  bool is_contiguous() const;
};

struct Node {
  std::string id;
  std::string op;                // canonical op name, or "other:<qualified name>"
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  nlohmann::json attrs = nlohmann::json::object();
  std::string origin;
};

class IrError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Row-major contiguous strides of a shape.
std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape);
// "[4096, 1]"
std::string format_dims(const std::vector<int64_t>& dims);

class Graph {
 public:
  int version = kIrVersion;
  std::string path;    // where it was read from ("" when parsed from memory)
  std::string module;
  std::string source;
  nlohmann::json init_inputs = nlohmann::json::array();
  std::map<std::string, Tensor> tensors;
  std::vector<Node> nodes;  // in execution order
  std::vector<std::string> outputs;

  const Tensor* find_tensor(const std::string& id) const;
  const Tensor& tensor(const std::string& id) const;  // throws IrError when absent
  const Node* find_node(const std::string& id) const;
  // The node that produces a value tensor (nullptr for inputs/params/consts).
  const Node* producer(const std::string& tensor_id) const;
  // Nodes that read the tensor, in graph order (a node reading it twice is listed once).
  std::vector<const Node*> consumers(const std::string& tensor_id) const;
  bool is_graph_output(const std::string& tensor_id) const;
  // Readers of the tensor, counting the graph output as one more reader.
  int use_count(const std::string& tensor_id) const;
  // True when exactly one node reads the tensor and it is not a graph output.
  bool single_use(const std::string& tensor_id) const;
  size_t node_index(const std::string& node_id) const;  // position in nodes; throws when absent

  // Rebuilds the producer/consumer maps; parse_graph calls it.
  void index();

 private:
  std::map<std::string, size_t> node_pos_;
  std::map<std::string, size_t> producer_;
  std::map<std::string, std::vector<size_t>> consumers_;  // indices: a copied Graph stays valid
};

// Validates and converts; `origin` names the file in error messages.
Graph parse_graph(const nlohmann::json& doc, const std::string& origin = "<memory>");
// Reads, parses JSON (error names the file and the JSON parser's position) and validates.
Graph load_graph(const std::string& path);

}  // namespace fact

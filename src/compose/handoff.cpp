#include "handoff.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fact/pattern_realizer.hpp"
#include "fact/variant.hpp"

namespace fact {
namespace {

using nlohmann::json;

// What the guards read of the module: which nodes read each tensor, and its outputs.
struct GraphUses {
  std::map<std::string, std::vector<std::string>> readers;
  std::set<std::string> outputs;
};

std::set<std::string> string_set(const json& list) {
  std::set<std::string> out;
  for (const json& item : list)
    if (item.is_string()) out.insert(item.get<std::string>());
  return out;
}

// The tensors a bound GEMM pattern's kernel reads besides A and B: the built-in
// epilogue's E and a fused chain's leaves.
std::set<std::string> epilogue_inputs(const json& pattern) {
  std::set<std::string> out;
  const json& epilogue = pattern["gemm"].value("epilogue", json::object());
  if (epilogue.value("kind", "none") != "none" && epilogue.value("tensor", json()).is_string())
    out.insert(epilogue["tensor"].get<std::string>());
  if (pattern.contains("fused_epilogue") && pattern["fused_epilogue"].is_object())
    for (const json& leaf : pattern["fused_epilogue"].value("inputs", json::array()))
      if (leaf.value("tensor", json()).is_string()) out.insert(leaf["tensor"].get<std::string>());
  return out;
}

int64_t number(const json& object, const char* key) { return object.value(key, int64_t{0}); }

// The guards every producer kind shares. A hand-off leaves `tensor` unwritten in fp32
// (only its image exists), so nothing but the consumer's A may read it; and the image
// holds it row-major, as the consumer must read it.
std::optional<std::string> tensor_guard(const json& consumer, const std::string& tensor, const GraphUses& uses) {
  if (uses.outputs.count(tensor)) return fmt::format("`{}` is an output of the module", tensor);
  const std::set<std::string> consumer_nodes = string_set(consumer.value("nodes", json::array()));
  auto found = uses.readers.find(tensor);
  if (found != uses.readers.end())
    for (const std::string& node : found->second)
      if (!consumer_nodes.count(node))
        return fmt::format("`{}` is also read by `{}`, outside the consumer pattern", tensor, node);
  if (epilogue_inputs(consumer).count(tensor))
    return fmt::format("the consumer's epilogue reads `{}` too", tensor);
  if (consumer["gemm"]["a"].value("layout", "") != "row")
    return fmt::format("the consumer reads A column-major (the image holds `{}` row-major)", tensor);
  return std::nullopt;
}

// Why GEMM `producer` cannot hand its D `tensor` to `consumer` as an A image; nullopt when it can.
std::optional<std::string> gemm_producer_guard(const json& producer, const json& consumer, const std::string& tensor,
                                               const GraphUses& uses, std::string& format) {
  const auto variant_p = parse_variant_name(producer.value("variant", ""));
  const auto variant_q = parse_variant_name(consumer.value("variant", ""));
  if (!variant_p || !variant_q) return "a winner is not a GEMM variant name";
  format = operand_image_format(*variant_p);
  if (format.empty())
    return fmt::format("the producer's winner {} writes no operand image (only the sm90split pre kernels do)",
                       variant_p->name());
  if (operand_image_format(*variant_q) != format)
    return fmt::format("the winners' image formats differ ({} writes '{}', {} reads '{}')", variant_p->name(), format,
                       variant_q->name(), operand_image_format(*variant_q));
  if (auto why = tensor_guard(consumer, tensor, uses)) return why;
  const json& p = producer["gemm"];
  const json& q = consumer["gemm"];
  if (number(q, "batch") != number(p, "batch") || number(q, "m") != number(p, "m") ||
      number(q, "k") != number(p, "n"))
    return fmt::format("shapes do not chain (producer D {}x{}x{}, consumer A {}x{}x{})", number(p, "batch"),
                       number(p, "m"), number(p, "n"), number(q, "batch"), number(q, "m"), number(q, "k"));
  if (number(q["a"], "ld") != number(p["d"], "ld") ||
      (number(p, "batch") > 1 && number(q["a"], "batch_stride") != number(p["d"], "batch_stride")))
    return "the consumer's A strides are not the producer's D strides";
  return std::nullopt;
}

// Why LayerNorm `producer` cannot hand its y `tensor` to `consumer` as an A image; nullopt
// when it can. The LayerNorm library writes the image of a rows x cols y with no batch
// dimension (fact_layernorm_run_image, docs/CONTRACTS.md §4.1).
std::optional<std::string> layernorm_producer_guard(const json& producer, const json& consumer,
                                                    const std::string& tensor, const GraphUses& uses,
                                                    std::string& format) {
  const auto variant_p = parse_layernorm_variant_name(producer.value("variant", ""));
  if (!variant_p)
    return fmt::format("the producer's winner '{}' is not a LayerNorm variant name", producer.value("variant", ""));
  const auto variant_q = parse_variant_name(consumer.value("variant", ""));
  if (!variant_q)
    return fmt::format("the consumer's winner '{}' is not a GEMM variant name", consumer.value("variant", ""));
  format = operand_image_format(*variant_q);
  if (format.empty())
    return fmt::format("the consumer's winner {} reads no operand image (only the sm90split pre kernels do)",
                       variant_q->name());
  const std::vector<std::string> written = layernorm_image_formats(*variant_p);
  if (std::find(written.begin(), written.end(), format) == written.end())
    return fmt::format("the LayerNorm winner {} writes no image in the format '{}' that {} reads ({})",
                       variant_p->name(), format, variant_q->name(),
                       written.empty() ? fmt::format("it writes none: rows wider than {} columns",
                                                     kLayerNormImageMaxCols)
                                       : fmt::format("it writes '{}'", fmt::join(written, "', '")));
  const json outputs = producer.value("outputs", json::array());
  if (outputs.size() != 1)
    return fmt::format("the LayerNorm pattern has {} outputs {}; only one whose y is its one output hands y off "
                       "(a residual LayerNorm that also writes its sum has two)",
                       outputs.size(), outputs.dump());
  if (auto why = tensor_guard(consumer, tensor, uses)) return why;
  LayerNormProblemDesc ln;
  int64_t y_row_stride = 0;
  try {
    ln = layernorm_problem_from_json(producer.at("layernorm"));
    y_row_stride = producer.at("layernorm").at("y").at("row_stride").get<int64_t>();
  } catch (const std::exception& e) {
    return fmt::format("the LayerNorm payload is unreadable: {}", e.what());
  }
  const json& q = consumer["gemm"];
  if (number(q, "batch") != 1)
    return fmt::format("the consumer is batched (batch {}); the LayerNorm's image has no batch dimension",
                       number(q, "batch"));
  if (number(q, "m") != ln.rows || number(q, "k") != ln.cols)
    return fmt::format("shapes do not chain (LayerNorm y {}x{}, consumer A {}x{})", ln.rows, ln.cols, number(q, "m"),
                       number(q, "k"));
  if (number(q["a"], "ld") != y_row_stride)
    return fmt::format("the consumer's A stride {} is not the LayerNorm's y row stride {}", number(q["a"], "ld"),
                       y_row_stride);
  return std::nullopt;
}

struct Producer {
  const json* pattern;
  const char* rule;  // "gemm" or "layernorm": which guard applies, and the entries' producer_rule
};

}  // namespace

json plan_handoffs(const json& ir, const json& bound) {
  GraphUses uses;
  for (const json& node : ir.value("nodes", json::array()))
    for (const json& input : node.value("inputs", json::array()))
      if (input.is_string()) uses.readers[input.get<std::string>()].push_back(node.value("id", ""));
  uses.outputs = string_set(ir.value("outputs", json::array()));

  // Tensor -> the bound pattern writing it that may hand it off: a GEMM's one output, a
  // LayerNorm's y (even beside a residual sum, so that the guard names why it is kept).
  std::map<std::string, Producer> producer_of;
  for (const json& pattern : bound) {
    if (pattern.contains("gemm") && pattern.value("outputs", json::array()).size() == 1)
      producer_of[pattern["outputs"][0].get<std::string>()] = {&pattern, "gemm"};
    if (pattern.contains("layernorm") && pattern["layernorm"].is_object()) {
      const json y = pattern["layernorm"].value("y", json());
      if (y.is_object() && y.value("tensor", json()).is_string())
        producer_of[y["tensor"].get<std::string>()] = {&pattern, "layernorm"};
    }
  }

  // Every pair the guards admit hands off. Pairs compose into chains (ln_2 -> c_fc ->
  // c_proj: c_fc reads ln's image and writes fc's): a pattern has one output and one A,
  // so it is the producer of at most one pair and the consumer of at most one, and each
  // tensor hands off at most once.
  json handoffs = json::array(), rejected = json::array();
  for (const json& consumer : bound) {
    if (!consumer.contains("gemm")) continue;
    const std::string tensor = consumer["gemm"]["a"].value("tensor", "");
    auto found = producer_of.find(tensor);
    if (found == producer_of.end()) continue;
    const json& producer = *found->second.pattern;
    const std::string rule = found->second.rule;
    std::string format;
    std::optional<std::string> why = rule == "gemm"
                                         ? gemm_producer_guard(producer, consumer, tensor, uses, format)
                                         : layernorm_producer_guard(producer, consumer, tensor, uses, format);
    json entry = {{"producer", producer.value("id", "")},
                  {"producer_rule", rule},
                  {"consumer", consumer.value("id", "")},
                  {"tensor", tensor}};
    if (why) {
      entry["reason"] = *why;
      rejected.push_back(std::move(entry));
      continue;
    }
    entry["format"] = format;
    handoffs.push_back(std::move(entry));
  }
  return {{"handoffs", handoffs}, {"not_handed_off", rejected}};
}

}  // namespace fact

#include "handoff.hpp"

#include <fmt/format.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fact/variant.hpp"

namespace fact {
namespace {

using nlohmann::json;

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

// Why `producer` cannot hand its output `tensor` to `consumer` as an A image; nullopt when it can.
std::optional<std::string> handoff_guard(const json& producer, const json& consumer, const std::string& tensor,
                                         const std::map<std::string, std::vector<std::string>>& readers,
                                         const std::set<std::string>& graph_outputs, std::string& format) {
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
  if (graph_outputs.count(tensor)) return fmt::format("`{}` is an output of the module", tensor);
  const std::set<std::string> consumer_nodes = string_set(consumer.value("nodes", json::array()));
  auto found = readers.find(tensor);
  if (found != readers.end())
    for (const std::string& node : found->second)
      if (!consumer_nodes.count(node))
        return fmt::format("`{}` is also read by `{}`, outside the consumer pattern", tensor, node);
  if (epilogue_inputs(consumer).count(tensor))
    return fmt::format("the consumer's epilogue reads `{}` too", tensor);
  const json& p = producer["gemm"];
  const json& q = consumer["gemm"];
  if (q["a"].value("layout", "") != "row")
    return "the consumer reads A column-major (the image is of the row-major D)";
  if (number(q, "batch") != number(p, "batch") || number(q, "m") != number(p, "m") ||
      number(q, "k") != number(p, "n"))
    return fmt::format("shapes do not chain (producer D {}x{}x{}, consumer A {}x{}x{})", number(p, "batch"),
                       number(p, "m"), number(p, "n"), number(q, "batch"), number(q, "m"), number(q, "k"));
  if (number(q["a"], "ld") != number(p["d"], "ld") ||
      (number(p, "batch") > 1 && number(q["a"], "batch_stride") != number(p["d"], "batch_stride")))
    return "the consumer's A strides are not the producer's D strides";
  return std::nullopt;
}

}  // namespace

json plan_handoffs(const json& ir, const json& bound) {
  std::map<std::string, std::vector<std::string>> readers;  // tensor -> nodes reading it
  for (const json& node : ir.value("nodes", json::array()))
    for (const json& input : node.value("inputs", json::array()))
      if (input.is_string()) readers[input.get<std::string>()].push_back(node.value("id", ""));
  const std::set<std::string> graph_outputs = string_set(ir.value("outputs", json::array()));

  std::map<std::string, const json*> producer_of;  // output tensor -> the bound GEMM pattern writing it
  for (const json& pattern : bound)
    if (pattern.contains("gemm") && pattern.value("outputs", json::array()).size() == 1)
      producer_of[pattern["outputs"][0].get<std::string>()] = &pattern;

  json handoffs = json::array(), rejected = json::array();
  std::set<std::string> taken;  // patterns already in a hand-off
  for (const json& consumer : bound) {
    if (!consumer.contains("gemm")) continue;
    const std::string tensor = consumer["gemm"]["a"].value("tensor", "");
    auto found = producer_of.find(tensor);
    if (found == producer_of.end()) continue;
    const json& producer = *found->second;
    const std::string p_id = producer.value("id", ""), q_id = consumer.value("id", "");
    std::string format;
    std::optional<std::string> why = handoff_guard(producer, consumer, tensor, readers, graph_outputs, format);
    if (!why && (taken.count(p_id) || taken.count(q_id)))
      why = "one of the patterns already takes part in another hand-off (chains are not composed)";
    if (why) {
      rejected.push_back({{"producer", p_id}, {"consumer", q_id}, {"tensor", tensor}, {"reason", *why}});
      continue;
    }
    taken.insert(p_id);
    taken.insert(q_id);
    handoffs.push_back({{"producer", p_id}, {"consumer", q_id}, {"tensor", tensor}, {"format", format}});
  }
  return {{"handoffs", handoffs}, {"not_handed_off", rejected}};
}

}  // namespace fact

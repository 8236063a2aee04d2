// The rule index: rules are data, looked up by the op at a pattern's root.
#include "fact/rules.hpp"

namespace fact {

void RuleSet::add(Rule rule) {
  rules_.push_back(std::move(rule));
  const size_t index = rules_.size() - 1;
  for (const auto& op : rules_.back().root_ops) by_root_[op].push_back(index);
}

std::vector<const Rule*> RuleSet::for_op(const std::string& op) const {
  std::vector<const Rule*> out;
  auto it = by_root_.find(op);
  if (it == by_root_.end()) return out;
  for (size_t i : it->second) out.push_back(&rules_[i]);
  return out;
}

const RuleSet& RuleSet::builtin() {
  static const RuleSet set = [] {
    RuleSet s;
    // GEMM ops have exactly one rule: the GEMM rule extended with its epilogue chain.
    s.add(make_gemm_epilogue_rule());
    s.add(make_attention_rule());
    s.add(make_layernorm_rule());
    return s;
  }();
  return set;
}

}  // namespace fact

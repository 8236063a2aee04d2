// The rule -> realizer table (the one place a rule name selects a realizer).
#include "fact/pattern_realizer.hpp"

#include <stdexcept>

#include <fmt/format.h>

#include "rule_realizer_common.hpp"

namespace fact {

const PatternRealizer& layernorm_realizer();  // layernorm_realizer.cpp
const PatternRealizer& attention_realizer();  // attention_realizer.cpp

const PatternRealizer* find_pattern_realizer(const std::string& rule) {
  for (const PatternRealizer* r : {&layernorm_realizer(), &attention_realizer()})
    if (rule == r->rule()) return r;
  return nullptr;
}

const nlohmann::json& rule_payload(const nlohmann::json& pattern, const std::string& rule) {
  if (!pattern.contains(rule) || !pattern.at(rule).is_object())
    throw std::runtime_error(fmt::format("plan pattern of rule '{}' has no '{}' payload", rule, rule));
  return pattern.at(rule);
}

}  // namespace fact

// The rule -> realizer table (the one place a rule name selects a realizer).
#include "fact/pattern_realizer.hpp"

namespace fact {

const PatternRealizer& layernorm_realizer();  // layernorm_realizer.cpp
const PatternRealizer& attention_realizer();  // attention_realizer.cpp

const PatternRealizer* find_pattern_realizer(const std::string& rule) {
  for (const PatternRealizer* r : {&layernorm_realizer(), &attention_realizer()})
    if (rule == r->rule()) return r;
  return nullptr;
}

}  // namespace fact

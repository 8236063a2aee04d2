// Plumbing the rule realizers share (layernorm_realizer.cpp, attention_realizer.cpp):
// reading a pattern's payload, turning a family's variants into candidates, and the
// group-wise default set of their enumerations.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fact/pattern_realizer.hpp"

namespace fact {

// The pattern's payload object, keyed by its rule's name. Throws std::runtime_error
// when the pattern has none.
const nlohmann::json& rule_payload(const nlohmann::json& pattern, const std::string& rule);

// A family's enumeration (variants, skipped, reason) as a realizer's: each variant
// made a candidate by `make`, in order.
template <class FamilyEnumeration, class MakeCandidate>
RealizerEnumeration to_realizer_enumeration(const FamilyEnumeration& e, MakeCandidate&& make) {
  RealizerEnumeration out;
  out.skipped = e.skipped;
  out.reason = e.reason;
  for (const auto& v : e.variants) out.candidates.push_back(make(v));
  return out;
}

// Offers one variant of a group (the variants a default set picks one of) to a
// family's enumeration: an illegal one is skipped with its reason; a legal one is
// kept, though the default set keeps only the group's first legal one.
template <class FamilyEnumeration, class Variant>
void offer_variant(FamilyEnumeration& out, const Variant& v, const std::optional<std::string>& illegal,
                   VariantSet set, bool& group_has_one) {
  if (illegal) {
    out.skipped.push_back({v.name(), *illegal});
    return;
  }
  if (group_has_one && set == VariantSet::Default) return;
  out.variants.push_back(v);
  group_has_one = true;
}

// What an enumeration that kept nothing says about why: its first skip's reason.
inline std::string first_skip_reason(const std::vector<SkippedVariant>& skipped) {
  return skipped.empty() ? "none" : skipped.front().reason;
}

}  // namespace fact

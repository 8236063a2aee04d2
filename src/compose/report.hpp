// The markdown report of a composed module: per pattern the chosen variant,
// math mode, verification error and time against eager; every fallback and
// every unmatched op with its reason; the operand hand-offs between patterns
// and the guard that rejected each pair that was not handed off.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace fact {

// handoffs: plan_handoffs()'s result (handoff.hpp).
std::string compose_report(const nlohmann::json& ir, const nlohmann::json& plan, const nlohmann::json& realized,
                           const nlohmann::json& handoffs);

}  // namespace fact

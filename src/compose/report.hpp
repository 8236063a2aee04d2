// The markdown report of a composed module: per pattern the chosen variant,
// math mode, verification error and time against eager; every fallback and
// every unmatched op with its reason.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace fact {

std::string compose_report(const nlohmann::json& ir, const nlohmann::json& plan, const nlohmann::json& realized);

}  // namespace fact

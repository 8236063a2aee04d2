// Source emitter: one thin translation unit per GEMM variant. The generated
// file holds a banner naming the generator, the includes, one Config
// instantiation and FACT_EXPORT_GEMM; all logic lives in templates/*.cuh.
// Contract: the output is a pure function of the variant (golden-tested in
// tests/golden, rewritten with FACT_UPDATE_GOLDEN=1).
#pragma once

#include <map>
#include <string>

#include "fact/variant.hpp"

namespace fact {

// Replaces every ${key} in `text` with values[key]. Throws std::invalid_argument
// when the text names a key that `values` lacks, or `values` has a key the text
// never uses (a silently dropped parameter would build the wrong kernel).
std::string fill_placeholders(const std::string& text, const std::map<std::string, std::string>& values);

// The .cu source of one variant. Throws std::invalid_argument when the variant's
// family has no such math mode.
std::string emit_variant_source(const GemmVariant& variant);

// The template header the variant instantiates ("gemm_sm90.cuh", ...): per
// family, and per schedule within sm90split (split_kernel(v)->header).
std::string template_header(const GemmVariant& variant);

// The `using FactConfig = fact::gemm_sm90::Config<...>;` declaration of an sm90
// variant, filled; `trailing_args` (",\n    FactChain") follows its epilogue
// argument. Throws std::invalid_argument when the family has no such math mode.
std::string sm90_config(const GemmVariant& variant, const std::string& trailing_args = "");

// The `using FactConfig = <split kernel namespace>::Config<...>;` declaration of an
// sm90split variant, filled; `trailing_args` (",\n    FactChain") follows its part
// format argument. Throws std::invalid_argument for a schedule no split kernel has.
std::string split_config(const GemmVariant& variant, const std::string& trailing_args = "");
// The qualified Operation an sm90split variant exports ("fact::split_gemm::pre::Operation",
// or ...::PersistentOperation for scheduler persistent).
std::string split_operation(const GemmVariant& variant);

// A generated translation unit: the banner naming its generator (a path under
// src/realize/), the template header it instantiates and the variant values["name"],
// a blank line, then `body` filled with `values`. The banner says the logic lives
// in `logic_home`.
std::string thin_source(const std::string& generator, const std::string& header, const char* body,
                        const std::map<std::string, std::string>& values,
                        const std::string& logic_home = "the template");

}  // namespace fact

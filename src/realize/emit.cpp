// Emitter: fills the named placeholders of one thin source template per
// kernel family. No kernel logic here or in the generated files.
#include "fact/emit.hpp"

#include <set>
#include <stdexcept>

#include <fmt/format.h>

namespace fact {
namespace {

// The sm90 Config, also the epilogue-chain source's (sm90_config).
constexpr const char* kSm90Config =
    "using FactConfig = fact::gemm_sm90::Config<\n"
    "    ${math}, /*A, B, C, D in memory*/ ${element_io},\n"
    "    /*tile*/ ${tile_m}, ${tile_n}, ${tile_k}, /*cluster*/ ${cluster_m}, ${cluster_n},\n"
    "    ${kernel_schedule},\n"
    "    ${epilogue_schedule},\n"
    "    ${tile_scheduler}, /*splits*/ ${splits}, /*stages (0 = auto)*/ ${stages},\n"
    "    ${layout_a}, ${layout_b},\n"
    "    ${epilogue}${trailing_args}>;\n";

constexpr const char* kSm90Source =
    "#include \"gemm_sm90.cuh\"\n"
    "#include \"fact_export.cuh\"\n"
    "\n"
    "${config}"
    "\n"
    "FACT_EXPORT_GEMM(fact::gemm_sm90::Operation<FactConfig>, \"${name}\")\n";

constexpr const char* kSm80Source =
    "#include \"gemm_sm80.cuh\"\n"
    "#include \"fact_export.cuh\"\n"
    "\n"
    "using FactConfig = fact::gemm_sm80::Config<\n"
    "    ${math},\n"
    "    /*tile*/ ${tile_m}, ${tile_n}, ${tile_k}, /*stages*/ ${stages}, /*splits*/ ${splits},\n"
    "    ${layout_a}, ${layout_b},\n"
    "    ${epilogue}>;\n"
    "\n"
    "FACT_EXPORT_GEMM(fact::gemm_sm80::Operation<FactConfig>, \"${name}\")\n";

// Interface of the split kernels' Configs (variant.hpp: SplitKernel): every one takes
// <TileM, TileN, TileK, Terms, ARowMajor, BRowMajor, Epilogue, Stages, PartFormat>
// (a kernel may grow defaulted parameters after these).
constexpr const char* kSplitConfigArgs =
    "    /*tile*/ ${tile_m}, ${tile_n}, ${tile_k}, /*terms*/ ${terms},\n"
    "    /*a_row_major*/ ${a_row_major}, /*b_row_major*/ ${b_row_major},\n"
    "    ${epilogue}, /*stages*/ ${stages}, ${part_format}";

// Any split kernel: ${ns} is its namespace (split_kernel(v)->ns), ${operation} its
// Operation (split_operation).
constexpr const char* kSm90SplitConfig =
    "using FactConfig = ${ns}::Config<\n"
    "${config_args}${trailing_args}>;\n";

constexpr const char* kSm90SplitSource =
    "#include \"${header}\"\n"
    "#include \"fact_export.cuh\"\n"
    "\n"
    "${config}"
    "\n"
    "FACT_EXPORT_GEMM(${operation}<FactConfig>, \"${name}\")\n";

}  // namespace

std::string fill_placeholders(const std::string& text, const std::map<std::string, std::string>& values) {
  std::string out;
  out.reserve(text.size() + 256);
  std::set<std::string> used;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find("${", pos);
    if (open == std::string::npos) {
      out.append(text, pos, std::string::npos);
      break;
    }
    const size_t close = text.find('}', open + 2);
    if (close == std::string::npos) throw std::invalid_argument("unterminated placeholder in source template");
    const std::string key = text.substr(open + 2, close - open - 2);
    auto it = values.find(key);
    if (it == values.end()) throw std::invalid_argument(fmt::format("no value for placeholder '{}'", key));
    out.append(text, pos, open - pos);
    out += it->second;
    used.insert(key);
    pos = close + 1;
  }
  for (const auto& [key, value] : values)
    if (!used.count(key)) throw std::invalid_argument(fmt::format("value '{}' fills no placeholder", key));
  return out;
}

std::string template_header(const GemmVariant& v) {
  switch (v.arch) {
    case KernelArch::Sm90:
      return "gemm_sm90.cuh";
    case KernelArch::Sm80:
      return "gemm_sm80.cuh";
    case KernelArch::Sm90Split:
      if (const SplitKernel* kernel = split_kernel(v)) return kernel->header;
      throw std::invalid_argument(v.name() + ": no split kernel has this schedule");
  }
  throw std::invalid_argument("unknown kernel family");
}

namespace {

// The Config placeholders every GEMM family fills the same way.
std::map<std::string, std::string> common_config_values(const GemmVariant& v) {
  return {
      {"tile_m", std::to_string(v.tile_m)},
      {"tile_n", std::to_string(v.tile_n)},
      {"tile_k", std::to_string(v.tile_k)},
      {"stages", std::to_string(v.stages)},
      {"epilogue", cpp::epilogue(v.epilogue)},
  };
}

std::string splits_value(const GemmVariant& v) {
  return std::to_string(v.scheduler == SchedulerKind::SplitK ? v.splits : 1);
}

// The math tag of any family's Config; throws when the family has no such math mode or
// I/O type (16-bit I/O is sm90's only).
std::string checked_math_tag(const GemmVariant& v) {
  std::string math = cpp::math_tag(v.arch, v.math);
  if (math.empty())
    throw std::invalid_argument(fmt::format("the {} family has no {} math mode", token(v.arch), token(v.math)));
  if (v.io != IoType::F32 && v.arch != KernelArch::Sm90)
    throw std::invalid_argument(fmt::format("the {} family has no {} I/O (sm90 only)", token(v.arch), token(v.io)));
  return math;
}

// The Config arguments of either split kernel.
std::string split_config_args(const GemmVariant& v) {
  std::map<std::string, std::string> values = common_config_values(v);
  values["terms"] = checked_math_tag(v);  // the table spells this family's math as its Terms count
  values["part_format"] =
      v.math == MathMode::F16x3 ? "fact::split_gemm::PartsFp16Scaled" : "fact::split_gemm::PartsBf16";
  values["a_row_major"] = v.layout_a == OperandLayout::Row ? "true" : "false";
  values["b_row_major"] = v.layout_b == OperandLayout::Row ? "true" : "false";
  return fill_placeholders(kSplitConfigArgs, values);
}

}  // namespace

std::string split_operation(const GemmVariant& v) {
  const SplitKernel* kernel = split_kernel(v);
  if (kernel == nullptr) throw std::invalid_argument(v.name() + ": no split kernel has this schedule");
  // A persistent launch (scheduler persistent, where the kernel has one) is its PersistentOperation.
  return std::string(kernel->ns) + (v.scheduler == SchedulerKind::Persistent && kernel->persistent
                                        ? "::PersistentOperation"
                                        : "::Operation");
}

std::string split_config(const GemmVariant& v, const std::string& trailing_args) {
  const SplitKernel* kernel = split_kernel(v);
  if (kernel == nullptr) throw std::invalid_argument(v.name() + ": no split kernel has this schedule");
  return fill_placeholders(kSm90SplitConfig,
                           {{"ns", kernel->ns}, {"config_args", split_config_args(v)}, {"trailing_args", trailing_args}});
}

std::string sm90_config(const GemmVariant& v, const std::string& trailing_args) {
  std::map<std::string, std::string> values = common_config_values(v);
  values["math"] = checked_math_tag(v);
  values["element_io"] = cpp::element(v.io);
  values["cluster_m"] = std::to_string(v.cluster_m);
  values["cluster_n"] = std::to_string(v.cluster_n);
  values["kernel_schedule"] = cpp::kernel_schedule(v.schedule);
  values["epilogue_schedule"] = cpp::epilogue_schedule(v.schedule);
  values["tile_scheduler"] = cpp::tile_scheduler(v.scheduler);
  values["splits"] = splits_value(v);
  values["layout_a"] = cpp::layout(v.layout_a);
  values["layout_b"] = cpp::layout(v.layout_b);
  values["trailing_args"] = trailing_args;
  return fill_placeholders(kSm90Config, values);
}

std::string thin_source(const std::string& generator, const std::string& header, const char* body,
                        const std::map<std::string, std::string>& values, const std::string& logic_home) {
  const std::string banner =
      fmt::format("// Generated by `fact realize` ({}) from templates/{}. Do not edit:\n"
                  "// the logic lives in {}; this file only instantiates it.\n"
                  "// Variant: {}\n",
                  generator, header, logic_home, values.at("name"));
  return banner + "\n" + fill_placeholders(body, values);
}

std::string emit_variant_source(const GemmVariant& v) {
  if (!v.chain_key.empty())
    throw std::invalid_argument(fmt::format("{} runs an epilogue chain: its source needs the chain "
                                            "(emit_chain_variant_source, src/realize/epilogue_emit.cpp)",
                                            v.name()));
  const std::string math = checked_math_tag(v);
  std::map<std::string, std::string> values;
  const char* body = nullptr;
  switch (v.arch) {
    case KernelArch::Sm90:
      body = kSm90Source;
      values["config"] = sm90_config(v);
      break;
    case KernelArch::Sm80:
      body = kSm80Source;
      values = common_config_values(v);
      values["math"] = math;
      values["splits"] = splits_value(v);
      values["layout_a"] = cpp::layout(v.layout_a);
      values["layout_b"] = cpp::layout(v.layout_b);
      break;
    case KernelArch::Sm90Split:
      body = kSm90SplitSource;
      values["header"] = template_header(v);
      values["operation"] = split_operation(v);
      values["config"] = split_config(v);
      break;
  }
  values["name"] = v.name();
  return thin_source("src/realize/emit.cpp", template_header(v), body, values);
}

}  // namespace fact

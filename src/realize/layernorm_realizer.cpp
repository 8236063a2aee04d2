// LayerNorm / RMSNorm realizer: the variant space of templates/layernorm.cuh (norm,
// row length compiled in, warps per row, vector width, residual mode), names, legality
// per plan payload, enumeration and the thin translation unit per variant.
#include <array>
#include <regex>
#include <stdexcept>

#include <fmt/format.h>

#include "fact/build.hpp"
#include "fact/emit.hpp"
#include "fact/pattern_realizer.hpp"
#include "rule_realizer_common.hpp"
#include "spelling.hpp"

namespace fact {
namespace {

// Register budget of one thread's row fragment (Config::kPerThread in the template).
constexpr int kMaxValuesPerThread = 64;

// Variant-name token and C++ constant of each residual mode.
constexpr std::array<Spelling<LayerNormResidual>, 3> kResidual{{
    {LayerNormResidual::None, "plain", "fact::layernorm::kNoResidual"},
    {LayerNormResidual::Residual, "res", "fact::layernorm::kResidual"},
    {LayerNormResidual::ResidualWritesSum, "res_sum", "fact::layernorm::kResidualWritesSum"},
}};

// Variant-name prefix, payload "norm" value and C++ constant of each normalisation.
struct NormSpelling {
  NormKind value;
  const char* token;
  const char* payload;
  const char* cpp;
};
constexpr std::array<NormSpelling, 2> kNorm{{
    {NormKind::Layer, "layernorm", "layer", "fact::layernorm::kLayerNorm"},
    {NormKind::Rms, "rmsnorm", "rms", "fact::layernorm::kRmsNorm"},
}};

const NormSpelling& norm_spelling(NormKind k) {
  for (const NormSpelling& s : kNorm)
    if (s.value == k) return s;
  throw std::logic_error("NormKind missing from kNorm");
}

const char* residual_token(LayerNormResidual r) {
  const Spelling<LayerNormResidual>* s = find_spelling(kResidual, r);
  return s ? s->token : "?";
}

const char* residual_cpp(LayerNormResidual r) {
  const Spelling<LayerNormResidual>* s = find_spelling(kResidual, r);
  return s ? s->cpp : "?";
}

int values_per_thread(const LayerNormVariant& v) {
  const int lanes = 32 * v.warps_per_row * v.vec;
  return (v.cols + lanes - 1) / lanes * v.vec;
}

constexpr const char* kSource =
    "#include \"${header}\"\n"
    "#include \"fact_export.cuh\"\n"
    "\n"
    "using FactConfig = fact::layernorm::Config<\n"
    "    /*cols*/ ${cols}, /*warps per row*/ ${warps}, /*vector width*/ ${vec},\n"
    "    ${residual}, ${norm}>;\n"
    "${images}"
    "\n"
    "FACT_EXPORT_LAYERNORM(fact::layernorm::Operation<FactConfig>, FactImages, \"${name}\")\n";

// The operand-image writers an sm90 library compiles in (layernorm_image.cuh), else none.
std::string images_declaration(const LayerNormVariant& v, bool sm90) {
  const std::vector<ImageFormatSpec> formats = sm90 && !layernorm_image_formats(v).empty()
                                                   ? split_image_format_specs()
                                                   : std::vector<ImageFormatSpec>{};
  if (formats.empty()) return "using FactImages = fact::layernorm::NoImages;\n";
  std::string out = "using FactImages = fact::layernorm::ImageWriters<FactConfig";
  for (const ImageFormatSpec& f : formats)
    out += fmt::format(",\n    fact::layernorm::ImageFormat<fact::split_gemm::{}, {}, {}, {}>",
                       f.f16_scaled ? "PartsFp16Scaled" : "PartsBf16", f.parts, f.rows, f.tile_k);
  return out + ">;\n";
}

class LayerNormRealizer final : public PatternRealizer {
 public:
  const char* rule() const override { return "layernorm"; }

  RealizerEnumeration enumerate(const nlohmann::json& pattern, double /*tolerance*/, const std::string& target_arch,
                                VariantSet set) const override {
    const LayerNormProblemDesc p = layernorm_problem_from_json(rule_payload(pattern, rule()));
    return to_realizer_enumeration(enumerate_layernorm_variants(p, set),
                                   [&](const LayerNormVariant& v) { return candidate(v, target_arch); });
  }

  std::optional<RealizerCandidate> candidate_named(const nlohmann::json& pattern, const std::string& name,
                                                   double /*tolerance*/, const std::string& target_arch) const override {
    auto v = parse_layernorm_variant_name(name);
    if (!v || !pattern.contains("layernorm")) return std::nullopt;
    if (layernorm_illegal_reason(*v, layernorm_problem_from_json(pattern.at("layernorm")))) return std::nullopt;
    return candidate(*v, target_arch);
  }

 private:
  static RealizerCandidate candidate(const LayerNormVariant& v, const std::string& target_arch) {
    return {v.name(), "f32", layernorm_nvcc_flags(target_arch), emit_layernorm_source(v, target_arch)};
  }
};

}  // namespace

std::string LayerNormVariant::name() const {
  return fmt::format("{}_{}_c{}_w{}_v{}_{}", norm_spelling(norm).token, element, cols, warps_per_row, vec,
                     residual_token(residual));
}

std::optional<LayerNormVariant> parse_layernorm_variant_name(const std::string& name) {
  static const std::regex pattern(R"((layernorm|rmsnorm)_(f32)_c(\d+)_w(\d+)_v(\d+)_(plain|res|res_sum))");
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  LayerNormVariant v;
  v.norm = m[1] == "rmsnorm" ? NormKind::Rms : NormKind::Layer;
  v.element = m[2];
  try {
    v.cols = std::stoi(m[3]);
    v.warps_per_row = std::stoi(m[4]);
    v.vec = std::stoi(m[5]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  v.residual = *from_token(kResidual, m[6].str());  // the pattern admits only the table's tokens
  if (v.cols <= 0 || (v.warps_per_row != 1 && v.warps_per_row != 2 && v.warps_per_row != 4 && v.warps_per_row != 8) ||
      (v.vec != 1 && v.vec != 2 && v.vec != 4) || v.name() != name)
    return std::nullopt;
  return v;
}

std::vector<std::string> layernorm_image_formats(const LayerNormVariant& v) {
  if (v.cols <= 0 || v.cols > kLayerNormImageMaxCols) return {};
  return split_image_formats();
}

LayerNormProblemDesc layernorm_problem_from_json(const nlohmann::json& ln) {
  auto need = [](const nlohmann::json& obj, const char* key) -> const nlohmann::json& {
    if (!obj.is_object() || !obj.contains(key) || obj.at(key).is_null())
      throw std::runtime_error(fmt::format("plan pattern 'layernorm' lacks field '{}'", key));
    return obj.at(key);
  };
  LayerNormProblemDesc p;
  try {
    const std::string norm = ln.value("norm", "layer");
    const NormSpelling* spelling = nullptr;
    for (const NormSpelling& s : kNorm)
      if (norm == s.payload) spelling = &s;
    if (!spelling)
      throw std::runtime_error(fmt::format("plan pattern 'layernorm' has norm '{}', not 'layer' or 'rms'", norm));
    p.norm = spelling->value;
    if (p.norm == NormKind::Rms && !ln.value("bias", nlohmann::json()).is_null())
      throw std::runtime_error("plan pattern 'layernorm' is an RMSNorm with a bias");
    p.rows = need(ln, "rows").get<int64_t>();
    p.cols = need(ln, "cols").get<int64_t>();
    p.element = need(ln, "element").get<std::string>();
    p.row_strides.push_back(need(need(ln, "y"), "row_stride").get<int64_t>());
    const auto residual = ln.value("residual", nlohmann::json());
    if (residual.is_null()) {
      p.row_strides.push_back(need(need(ln, "x"), "row_stride").get<int64_t>());
    } else {
      p.row_strides.push_back(need(need(residual, "a"), "row_stride").get<int64_t>());
      p.row_strides.push_back(need(need(residual, "b"), "row_stride").get<int64_t>());
      const auto sum = residual.value("sum", nlohmann::json());
      if (!sum.is_null()) p.row_strides.push_back(need(sum, "row_stride").get<int64_t>());
      p.residual = sum.is_null() ? LayerNormResidual::Residual : LayerNormResidual::ResidualWritesSum;
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("plan pattern 'layernorm' has a malformed field: {}", e.what()));
  }
  return p;
}

std::optional<std::string> layernorm_illegal_reason(const LayerNormVariant& v, const LayerNormProblemDesc& p) {
  if (p.element != "float32") return fmt::format("layernorm variants exist for float32 only, not {}", p.element);
  if (v.norm != p.norm)
    return fmt::format("a {} variant does not compute the pattern's {}", norm_spelling(v.norm).token,
                       norm_spelling(p.norm).token);
  if (v.cols != p.cols) return fmt::format("compiled for {} columns, the rows have {}", v.cols, p.cols);
  if (v.residual != p.residual)
    return fmt::format("residual mode '{}' does not match the pattern's '{}'", residual_token(v.residual),
                       residual_token(p.residual));
  if (p.cols % v.vec != 0) return fmt::format("{} columns are not a multiple of the vector width {}", p.cols, v.vec);
  if (p.rows > 1)
    for (int64_t stride : p.row_strides)
      if (stride % v.vec != 0)
        return fmt::format("row stride {} is not a multiple of the vector width {}", stride, v.vec);
  if (values_per_thread(v) > kMaxValuesPerThread)
    return fmt::format("{} values per thread exceed the {}-register row fragment (more warps per row needed)",
                       values_per_thread(v), kMaxValuesPerThread);
  const int lanes = 32 * v.warps_per_row * v.vec;
  if (v.warps_per_row > 1 && lanes >= 2 * p.cols)
    return fmt::format("{} warps x {} values would leave most of the {} lanes idle on {} columns", v.warps_per_row,
                       v.vec, lanes, p.cols);
  return std::nullopt;
}

LayerNormEnumeration enumerate_layernorm_variants(const LayerNormProblemDesc& p, VariantSet set) {
  LayerNormEnumeration out;
  if (p.element != "float32") {
    out.reason = fmt::format("layernorm variants exist for float32 only, not {}", p.element);
    return out;
  }
  if (p.rows <= 0 || p.cols <= 0) {
    out.reason = fmt::format("empty layernorm problem ({} rows x {} columns)", p.rows, p.cols);
    return out;
  }
  for (int warps : {1, 2, 4, 8}) {
    bool have_one = false;  // default set: the widest legal vector per warp count
    for (int vec : {4, 2, 1}) {
      LayerNormVariant v;
      v.norm = p.norm;
      v.cols = static_cast<int>(p.cols);
      v.warps_per_row = warps;
      v.vec = vec;
      v.residual = p.residual;
      offer_variant(out, v, layernorm_illegal_reason(v, p), set, have_one);
    }
  }
  if (out.variants.empty())
    out.reason = fmt::format("no layernorm variant fits {} columns (first reason: {})", p.cols,
                             first_skip_reason(out.skipped));
  return out;
}

bool layernorm_targets_sm90(const std::string& target_arch) { return target_arch.rfind("sm90", 0) == 0; }

std::vector<std::string> layernorm_nvcc_flags(const std::string& target_arch) {
  // sm90: compute_90a, as the split GEMMs (the image writer uses clusters). Else plain
  // CUDA: compute_80 PTX to the target's SASS, as the sm80 GEMM family.
  return nvcc_flags(layernorm_targets_sm90(target_arch) ? KernelArch::Sm90 : KernelArch::Sm80, target_arch);
}

std::string emit_layernorm_source(const LayerNormVariant& v, const std::string& target_arch) {
  const bool sm90 = layernorm_targets_sm90(target_arch);
  const char* header = sm90 ? "layernorm_image.cuh" : "layernorm.cuh";
  return thin_source("src/realize/layernorm_realizer.cpp", header, kSource,
                     {{"name", v.name()},
                      {"header", header},
                      {"images", images_declaration(v, sm90)},
                      {"cols", std::to_string(v.cols)},
                      {"warps", std::to_string(v.warps_per_row)},
                      {"vec", std::to_string(v.vec)},
                      {"residual", residual_cpp(v.residual)},
                      {"norm", norm_spelling(v.norm).cpp}});
}

const PatternRealizer& layernorm_realizer() {
  static const LayerNormRealizer realizer;
  return realizer;
}

}  // namespace fact

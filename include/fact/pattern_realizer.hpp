// Per-rule realizers for the pattern families that are not GEMMs (LayerNorm,
// attention): each turns a plan pattern's payload (docs/CONTRACTS.md §2.1) into
// candidate translation units that go through the same compile -> verify ->
// time -> registry pipeline as GEMM variants (src/realize/realize.cpp).
// Dispatch is by the pattern's rule name, looked up in one table
// (find_pattern_realizer); nothing matches on substrings of names.
// Pure C++: nothing here needs CUDA.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fact/variant.hpp"

namespace fact {

// One compilable candidate: its procedural name (cache, registry and file key),
// the math mode the report states, nvcc flags and the generated source.
struct RealizerCandidate {
  std::string name;
  std::string math;
  std::vector<std::string> flags;
  std::string source;
};

struct RealizerEnumeration {
  std::vector<RealizerCandidate> candidates;  // legal, in a stable order
  std::vector<SkippedVariant> skipped;        // illegal for this pattern, with reasons
  std::string reason;                         // set when nothing can be enumerated at all
};

class PatternRealizer {
 public:
  virtual ~PatternRealizer() = default;
  virtual const char* rule() const = 0;
  // Candidates for a plan pattern at a tolerance on a target arch ("sm90a", "sm80").
  // Throws std::runtime_error naming the field when the payload is malformed.
  virtual RealizerEnumeration enumerate(const nlohmann::json& pattern, double tolerance,
                                        const std::string& target_arch, VariantSet set) const = 0;
  // The candidate called `name` for this pattern (the registry's warm path), or
  // nullopt when `name` is not a variant of this family or is illegal here.
  virtual std::optional<RealizerCandidate> candidate_named(const nlohmann::json& pattern, const std::string& name,
                                                           double tolerance, const std::string& target_arch) const = 0;
};

// The realizer of `rule`, or nullptr (GEMM patterns have their own path in
// realize.cpp; any other rule falls back with "no realizer for rule").
const PatternRealizer* find_pattern_realizer(const std::string& rule);

// ---- LayerNorm / RMSNorm (templates/layernorm.cuh) ----------------------------

enum class LayerNormResidual { None, Residual, ResidualWritesSum };
// Which normalisation (plan payload "layernorm"."norm": "layer" | "rms").
enum class NormKind { Layer, Rms };

// <layernorm|rmsnorm>_<element>_c<cols>_w<warps per row>_v<vector width>_<plain|res|res_sum>
struct LayerNormVariant {
  NormKind norm = NormKind::Layer;
  std::string element = "f32";
  int cols = 0;
  int warps_per_row = 1;
  int vec = 1;
  LayerNormResidual residual = LayerNormResidual::None;
  std::string name() const;
};
std::optional<LayerNormVariant> parse_layernorm_variant_name(const std::string& name);
// The operand-image formats a LayerNorm library of `v` writes (its
// fact_layernorm_image_formats(), docs/CONTRACTS.md §4.1) when it is built for an sm90
// target: split_image_formats() when the image writer's register fragment holds the
// row (cols <= kLayerNormImageMaxCols), else none. Libraries built for other targets
// write none (and no GEMM there reads an image).
constexpr int kLayerNormImageMaxCols = 2048;
std::vector<std::string> layernorm_image_formats(const LayerNormVariant& v);

struct LayerNormProblemDesc {
  NormKind norm = NormKind::Layer;
  int64_t rows = 0, cols = 0;
  std::string element = "float32";
  LayerNormResidual residual = LayerNormResidual::None;
  std::vector<int64_t> row_strides;  // of every row-addressed operand (x or a/b, sum, y)
};
// Reads a plan pattern's "layernorm" object ("norm" absent: a plan written before RMSNorm,
// "layer"); throws std::runtime_error naming the bad field.
LayerNormProblemDesc layernorm_problem_from_json(const nlohmann::json& layernorm);
std::optional<std::string> layernorm_illegal_reason(const LayerNormVariant& v, const LayerNormProblemDesc& p);
struct LayerNormEnumeration {
  std::vector<LayerNormVariant> variants;
  std::vector<SkippedVariant> skipped;
  std::string reason;
};
LayerNormEnumeration enumerate_layernorm_variants(const LayerNormProblemDesc& p, VariantSet set);
// The thin translation unit of `v` for `target_arch` ("sm90a": with the operand-image
// writers of layernorm_image_formats, built by layernorm_nvcc_flags for compute_90a;
// else without) and its nvcc flags.
std::string emit_layernorm_source(const LayerNormVariant& v, const std::string& target_arch);
std::vector<std::string> layernorm_nvcc_flags(const std::string& target_arch);

// ---- Attention -----------------------------------------------------------------
// Two kernel families:
//   Sm80Tf32x3: attention_sm80_tf32x3_f32_<queries per block>x<keys per block>_maxk<kMaxK>
//     (templates/attention_sm80.cuh: CUTLASS example 41, 3xTF32 on mma.sync; any sm80+)
//   Sm90F16x3:  attention_sm90_f16x3_f32_d<head dim>_k<keys per tile>_s<S chunk>_pv<PV chunk>
//     (templates/attention_sm90.cuh: f16x3 split operands on wgmma; sm90a only)
enum class AttentionFamily { Sm80Tf32x3, Sm90F16x3 };
struct AttentionVariant {
  int queries_per_block = 64;  // Sm80Tf32x3
  int keys_per_block = 64;     // both families (Sm90F16x3: 64; 32 at head dim 128)
  int max_k = 64;              // Sm80Tf32x3: kMaxK, 65536 = unbounded; Sm90F16x3: the compiled head dim
  AttentionFamily family = AttentionFamily::Sm80Tf32x3;
  int s_chunk = 0;   // Sm90F16x3: head-dim columns per promotion of S = Q.K^T
  int pv_chunk = 0;  // Sm90F16x3: keys per promotion of O += P.V
  std::string name() const;
};
std::optional<AttentionVariant> parse_attention_variant_name(const std::string& name);

struct AttentionOperandDesc {
  int64_t offset = 0, batch = 0, head = 0, seq = 0, dim = 1;
};
struct AttentionProblemDesc {
  int64_t batch = 0, heads = 0, seq_q = 0, seq_k = 0, head_dim = 0, head_dim_v = 0;
  std::string element = "float32";
  bool causal = false;
  std::string mask_kind;  // "" (none), "is_causal", "masked_fill", "additive"
  AttentionOperandDesc q, k, v, o;
};
// Reads a plan pattern's "attention" object; throws std::runtime_error naming the bad field.
AttentionProblemDesc attention_problem_from_json(const nlohmann::json& attention);
// Why no attention variant can run the problem (mask, dtype, output layout), or nullopt.
std::optional<std::string> attention_problem_unsupported_reason(const AttentionProblemDesc& p);
std::optional<std::string> attention_illegal_reason(const AttentionVariant& v, const AttentionProblemDesc& p);
struct AttentionEnumeration {
  std::vector<AttentionVariant> variants;
  std::vector<SkippedVariant> skipped;
  std::string reason;
};
// Sm90F16x3 variants only for an sm90 target_arch ("sm90a", "sm90"); there the default
// set offers Sm80Tf32x3 only when no Sm90F16x3 variant fits the problem.
AttentionEnumeration enumerate_attention_variants(const AttentionProblemDesc& p, double tolerance, VariantSet set,
                                                  const std::string& target_arch);
std::string emit_attention_source(const AttentionVariant& v);

}  // namespace fact

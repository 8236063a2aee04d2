// The GEMM variant space (docs/CONTRACTS.md §3): the fields of a variant, its
// procedural name (built in one place: GemmVariant::name), the enum -> name
// token -> C++ spelling table (one place: src/realize/variant.cpp), legality
// per problem, and the enumeration of candidates per (problem, tolerance, arch).
// Pure C++: nothing here needs CUDA.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fact {

// Kernel family: sm90 = CUTLASS 3.x TMA warp-specialized (gemm_sm90.cuh),
// sm80 = CUTLASS 2.x GemmUniversal (gemm_sm80.cuh), sm90split = FACT's own
// fp32-input wgmma kernels, one per schedule (split_kernel below).
enum class KernelArch { Sm90, Sm80, Sm90Split };
enum class MathMode { F32, TF32, BF16, F16, TF32x3, BF16x3, BF16x6, F16x3 };
// Element type of A, B, E (bias / C), the epilogue chain's leaves and D in memory: the
// name's 4th field. f32: fp32 everywhere; a math mode other than f32 / tf32 converts the
// operands itself (a pre-pass or the split kernels' producers). f16, bf16 (16-bit I/O,
// sm90 only): the operands are read as they are by tensor-core math of their own type
// (math f16 / bf16) with fp32 accumulation; the epilogue computes in fp32 and rounds
// once to D's type, as cuBLAS does for torch's fp16 / bf16 matmul.
enum class IoType { F32, F16, BF16 };
enum class Schedule { Coop, Pingpong, Ws, Mstage, Simt, Pre, Hybrid };
enum class SchedulerKind { Persistent, StreamK, SplitK, Dp };
enum class OperandLayout { Row, Col };
enum class EpilogueKind { None, Bias, C };

// Name tokens (the parts of a variant name).
const char* token(KernelArch v);
const char* token(MathMode v);
const char* token(IoType v);
const char* token(Schedule v);
const char* token(SchedulerKind v);  // "splitk" without the count
const char* token(EpilogueKind v);
// The IR dtype of an I/O type ("float32", "float16", "bfloat16"), its size in bytes, and
// the I/O type of an IR dtype name (nullopt for one no GEMM variant reads).
const char* io_dtype_name(IoType v);
int io_element_bytes(IoType v);
std::optional<IoType> io_type_of(const std::string& dtype);
// The math mode a 16-bit I/O type runs (f16 -> f16, bf16 -> bf16); nullopt for f32,
// whose variants choose among several.
std::optional<MathMode> io_native_math(IoType v);
// Contract layout letter: A row -> 't', A col -> 'n'; B col -> 't', B row -> 'n'.
char layout_letter(OperandLayout layout, bool is_b);

// C++ spellings the emitter pastes into generated sources.
namespace cpp {
// Math tag type of the family's template ("fact::gemm_sm90::MathBf16x3", ...);
// "" when the family has no such mode.
std::string math_tag(KernelArch arch, MathMode math);
const char* kernel_schedule(Schedule s);    // cutlass::gemm::KernelTmaWarpSpecialized...
const char* epilogue_schedule(Schedule s);  // cutlass::epilogue::TmaWarpSpecialized...
const char* tile_scheduler(SchedulerKind s);  // cutlass::gemm::PersistentScheduler / StreamKScheduler
const char* layout(OperandLayout l);        // cutlass::layout::RowMajor / ColumnMajor
const char* element(IoType v);              // float / cutlass::half_t / cutlass::bfloat16_t
const char* epilogue(EpilogueKind e);       // FACT_EPILOGUE_NONE / _BIAS / _C
}  // namespace cpp

struct GemmVariant {
  KernelArch arch = KernelArch::Sm90;
  MathMode math = MathMode::BF16x3;
  IoType io = IoType::F32;
  int tile_m = 128, tile_n = 128, tile_k = 64;
  int cluster_m = 1, cluster_n = 1;
  Schedule schedule = Schedule::Coop;
  SchedulerKind scheduler = SchedulerKind::Persistent;
  int splits = 1;  // SchedulerKind::SplitK only (>= 2)
  int stages = 0;  // 0 = auto
  OperandLayout layout_a = OperandLayout::Row;
  OperandLayout layout_b = OperandLayout::Col;
  EpilogueKind epilogue = EpilogueKind::None;
  // First 8 hex digits of the pattern's epilogue_chain key when this variant
  // runs the chain in its epilogue (sm90 EVT, src/realize/epilogue_emit.cpp); "" otherwise.
  std::string chain_key;

  // gemm_<arch>_<math>_<io>_<tM>x<tN>x<tK>_c<cm>x<cn>_<schedule>_<scheduler>_s<stages|auto>_<la><lb>_<epilogue>
  // [_evt<chain_key>]
  std::string name() const;
  bool operator==(const GemmVariant& o) const { return name() == o.name(); }
};

// FACT's own split kernels (family sm90split), chosen by the variant's schedule:
//   ws   v2: split_gemm_sm90.cuh, the MMA warpgroups convert (TileM 64 or 128)
//   coop v3: split_gemm_ws_sm90.cuh, two producer warpgroups convert for two
//        cooperating consumer warpgroups (TileM 128)
//   pre  v3 pre: split_gemm_pre_sm90.cuh, both operands split once by a pre-pass,
//        one producer thread bulk-copies the parts (TileM 128; workspace holds the
//        split operands); one CTA per tile (scheduler dp) or persistent
struct SplitKernel {
  Schedule schedule;
  const char* header;     // the template the thin source includes
  const char* ns;         // C++ namespace of its Config and Operation
  bool consumer_ring;     // v3 family: two 64-row consumer warpgroups on a part ring
  bool persistent;        // may also launch persistent (scheduler persistent: PersistentOperation)
  bool any_alignment;     // reads fp32 A and B of any alignment (a pre-pass with 4-byte copies);
                          // else both need 16-byte rows (TMA, 16-byte cp.async)
};
// The split kernel of an sm90split variant; nullptr for another family or a
// schedule no split kernel has.
const SplitKernel* split_kernel(const GemmVariant& v);

// The operand-image format a variant's library reads (FactGemmProblem::a_image) and
// writes (d_image): the string its fact_gemm_image_format() returns
// (templates/split_gemm_pre_sm90.cuh, LaunchedAs::image_format). Only the pre split
// kernels have one; "" for every other variant. Two variants with the same non-empty
// format can hand one GEMM's D to the next GEMM's A without the fp32 round trip.
std::string operand_image_format(const GemmVariant& v);

// The parameters of an operand-image format; name() is its format string
// (fact-split-image-v1:<f16s|bf16>:p<parts>:r<rows>:k<tile k>:sw64, the CUDA side's
// split_gemm::image_format_name in templates/operand_image.cuh).
struct ImageFormatSpec {
  bool f16_scaled = false;  // PartsFp16Scaled, else PartsBf16
  int parts = 0, rows = 0, tile_k = 0;
  std::string name() const;
};

// Every operand-image format a pre split kernel that FACT enumerates may have, in a
// fixed order. The LayerNorm image writers (templates/layernorm_image.cuh) are compiled
// for exactly these (emit_layernorm_source).
std::vector<ImageFormatSpec> split_image_format_specs();
std::vector<std::string> split_image_formats();  // their names

// Inverse of GemmVariant::name(); nullopt for anything that is not a valid name.
std::optional<GemmVariant> parse_variant_name(const std::string& name);

// What the enumerator needs to know of one GEMM pattern (plan.json "gemm", §2).
struct GemmProblemDesc {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  OperandLayout layout_a = OperandLayout::Row, layout_b = OperandLayout::Col;
  int64_t ld_a = 0, ld_b = 0, ld_d = 0, ld_e = 0;
  int64_t batch_stride_a = 0, batch_stride_b = 0, batch_stride_d = 0, batch_stride_e = 0;
  EpilogueKind epilogue = EpilogueKind::None;
  std::string element_a = "float32", element_b = "float32", element_d = "float32";
};

// The I/O type of a problem whose A, B and D share one element type a variant reads
// (E and the chain's leaves share D's: discover's guards); nullopt otherwise.
std::optional<IoType> problem_io_type(const GemmProblemDesc& p);

// Reads a plan pattern's "gemm" object; throws std::runtime_error naming the bad field.
GemmProblemDesc gemm_problem_from_json(const nlohmann::json& gemm);

// KernelBench's two classes: fp32 data (1e-4) admits only fp32-faithful math
// (f32, tf32x3, bf16x6, f16x3: >= ~22 operand bits; docs/notes/NOTES.md
// measured bf16x3 failing 1e-4 on zero-mean data even with exact accumulation);
// fp16/bf16-class tolerances (1e-2) also admit tf32, bf16, f16 and bf16x3.
enum class ToleranceClass { Fp32Faithful, Relaxed };
ToleranceClass tolerance_class(double tolerance);
// Whether the math mode is admitted for the class (independent of arch), for fp32 data.
bool math_admitted(MathMode math, ToleranceClass cls);
// Whether the variant is admitted for the class: its math mode on fp32 I/O; a 16-bit
// I/O variant at every class (its operands are not rounded: the data is 16-bit already,
// and its fp32 accumulation with one rounding of D is what eager does).
bool variant_admitted(const GemmVariant& v, ToleranceClass cls);

enum class VariantSet { Default, All };
VariantSet parse_variant_set(const std::string& text);  // "default" | "all"; throws otherwise

// Why `v` cannot run `p` (alignment, layout limits, dtype), or nullopt when it may.
// Run-time checks (pointer alignment) remain the kernel's can_implement.
std::optional<std::string> variant_illegal_reason(const GemmVariant& v, const GemmProblemDesc& p);

struct SkippedVariant {
  std::string name;
  std::string reason;
};
struct Enumeration {
  std::vector<GemmVariant> variants;    // legal candidates, in a stable order
  std::vector<SkippedVariant> skipped;  // illegal for this problem, with reasons
  std::string reason;                   // set when nothing can be enumerated at all
};

// Candidates for one GEMM problem at a tolerance on a target (plan "arch":
// "sm90a" -> sm90, sm90split and sm80 families; "sm80"/"sm8x" -> sm80 only).
Enumeration enumerate_gemm_variants(const GemmProblemDesc& problem, double tolerance, const std::string& target_arch,
                                    VariantSet set);

// Split count for a split-K variant of a small-MN large-K problem: enough
// tiles x splits to cover `sm_count` SMs about twice, a power of two in [2, 64].
int choose_split_count(const GemmProblemDesc& p, int tile_m, int tile_n, int sm_count = 132);

}  // namespace fact

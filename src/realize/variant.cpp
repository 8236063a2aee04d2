// The variant space: the enum -> token -> C++ spelling table (the only place
// CUTLASS type names are spelled on the C++ side), names, legality and the
// candidate enumeration per problem / tolerance / arch.
#include "fact/variant.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <tuple>

#include <fmt/format.h>

#include "fact/ir.hpp"
#include "spelling.hpp"

namespace fact {
namespace {

// ---- the table ---------------------------------------------------------------
constexpr std::array<Spelling<KernelArch>, 3> kArch{{
    {KernelArch::Sm90, "sm90", "sm90"},
    {KernelArch::Sm80, "sm80", "sm80"},
    {KernelArch::Sm90Split, "sm90split", "sm90split"},
}};
constexpr std::array<Spelling<MathMode>, 8> kMath{{
    {MathMode::F32, "f32", ""},
    {MathMode::TF32, "tf32", ""},
    {MathMode::BF16, "bf16", ""},
    {MathMode::F16, "f16", ""},
    {MathMode::TF32x3, "tf32x3", ""},
    {MathMode::BF16x3, "bf16x3", ""},
    {MathMode::BF16x6, "bf16x6", ""},
    {MathMode::F16x3, "f16x3", ""},
}};
constexpr std::array<Spelling<IoType>, 3> kIo{{
    {IoType::F32, "f32", "float"},
    {IoType::F16, "f16", "cutlass::half_t"},
    {IoType::BF16, "bf16", "cutlass::bfloat16_t"},
}};
// What else an I/O type stands for: its IR dtype, and the math mode a 16-bit one runs
// (its own type; fp32 I/O picks among several).
struct IoData {
  IoType io;
  DType dtype;
  std::optional<MathMode> native_math;
};
const std::array<IoData, 3> kIoData{{
    {IoType::F32, DType::Float32, std::nullopt},
    {IoType::F16, DType::Float16, MathMode::F16},
    {IoType::BF16, DType::BFloat16, MathMode::BF16},
}};
// cpp: the CUTLASS kernel schedule; the epilogue schedule is in kEpilogueSchedule.
constexpr std::array<Spelling<Schedule>, 7> kSchedule{{
    {Schedule::Coop, "coop", "cutlass::gemm::KernelTmaWarpSpecializedCooperative"},
    {Schedule::Pingpong, "pingpong", "cutlass::gemm::KernelTmaWarpSpecializedPingpong"},
    {Schedule::Ws, "ws", "cutlass::gemm::KernelTmaWarpSpecialized"},
    {Schedule::Mstage, "mstage", ""},
    {Schedule::Simt, "simt", ""},
    {Schedule::Pre, "pre", ""},
    {Schedule::Hybrid, "hyb", ""},
}};
constexpr std::array<Spelling<Schedule>, 7> kEpilogueSchedule{{
    {Schedule::Coop, "coop", "cutlass::epilogue::TmaWarpSpecializedCooperative"},
    {Schedule::Pingpong, "pingpong", "cutlass::epilogue::TmaWarpSpecialized"},
    {Schedule::Ws, "ws", "cutlass::epilogue::TmaWarpSpecialized"},
    {Schedule::Mstage, "mstage", ""},
    {Schedule::Simt, "simt", ""},
    {Schedule::Pre, "pre", ""},
    {Schedule::Hybrid, "hyb", ""},
}};
// FACT's split kernels by schedule (variant.hpp: SplitKernel).
constexpr std::array<SplitKernel, 4> kSplitKernels{{
    {Schedule::Ws, "split_gemm_sm90.cuh", "fact::split_gemm", false, false, false},
    {Schedule::Coop, "split_gemm_ws_sm90.cuh", "fact::split_gemm::ws", true, false, false},
    {Schedule::Pre, "split_gemm_pre_sm90.cuh", "fact::split_gemm::pre", true, true, true},
    {Schedule::Hybrid, "split_gemm_hybrid_sm90.cuh", "fact::split_gemm::hybrid", true, true, false},
}};
// Split-K on sm90 is the stream-K scheduler forced into split-K decomposition.
constexpr std::array<Spelling<SchedulerKind>, 4> kScheduler{{
    {SchedulerKind::Persistent, "persistent", "cutlass::gemm::PersistentScheduler"},
    {SchedulerKind::StreamK, "streamk", "cutlass::gemm::StreamKScheduler"},
    {SchedulerKind::SplitK, "splitk", "cutlass::gemm::StreamKScheduler"},
    {SchedulerKind::Dp, "dp", "cutlass::gemm::PersistentScheduler"},
}};
constexpr std::array<Spelling<OperandLayout>, 2> kLayout{{
    {OperandLayout::Row, "row", "cutlass::layout::RowMajor"},
    {OperandLayout::Col, "col", "cutlass::layout::ColumnMajor"},
}};
constexpr std::array<Spelling<EpilogueKind>, 3> kEpilogue{{
    {EpilogueKind::None, "none", "FACT_EPILOGUE_NONE"},
    {EpilogueKind::Bias, "bias", "FACT_EPILOGUE_BIAS"},
    {EpilogueKind::C, "c", "FACT_EPILOGUE_C"},
}};
struct MathTag {
  KernelArch arch;
  MathMode math;
  const char* cpp;
};
// Math modes each family implements, with the template's tag type. sm90split
// takes a Terms count instead of a tag (see emit.cpp).
constexpr std::array<MathTag, 12> kMathTags{{
    {KernelArch::Sm90, MathMode::TF32, "fact::gemm_sm90::MathTf32"},
    {KernelArch::Sm90, MathMode::BF16, "fact::gemm_sm90::MathBf16"},
    {KernelArch::Sm90, MathMode::F16, "fact::gemm_sm90::MathF16"},
    {KernelArch::Sm90, MathMode::BF16x3, "fact::gemm_sm90::MathBf16x3"},
    {KernelArch::Sm90, MathMode::BF16x6, "fact::gemm_sm90::MathBf16x6"},
    {KernelArch::Sm90, MathMode::F16x3, "fact::gemm_sm90::MathF16x3"},
    {KernelArch::Sm80, MathMode::F32, "fact::gemm_sm80::MathSimt"},
    {KernelArch::Sm80, MathMode::TF32x3, "fact::gemm_sm80::MathTf32x3"},
    {KernelArch::Sm90Split, MathMode::BF16, "1"},
    {KernelArch::Sm90Split, MathMode::BF16x3, "3"},
    {KernelArch::Sm90Split, MathMode::BF16x6, "6"},
    {KernelArch::Sm90Split, MathMode::F16x3, "3"},  // fp16 parts of x * 2^s (PartsFp16Scaled)
}};
// -------------------------------------------------------------------------------

constexpr const char* kMissing = "variant spelling table is missing an enum value";

bool family_has_math(KernelArch arch, MathMode math) {
  return std::any_of(kMathTags.begin(), kMathTags.end(),
                     [&](const MathTag& t) { return t.arch == arch && t.math == math; });
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return parts;
}

std::optional<int> to_int(const std::string& s) {
  if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoi(s);
}

int64_t tiles(int64_t extent, int tile) { return (extent + tile - 1) / tile; }

constexpr size_t kSm90SmemLimit = 227 * 1024;

// Shared memory of an sm90split configuration, computed as its template's
// Config::SmemBytes does (split_gemm_sm90.cuh for v2, split_gemm_ws_sm90.cuh for v3,
// split_gemm_pre_sm90.cuh for v3 pre, split_gemm_hybrid_sm90.cuh for v3 hybrid). The
// templates' static_asserts catch a drift at compile time; tests/unit/realize/test_variant.cpp
// pins the values they compiled with.
// Config::Parts of an sm90split variant (16-bit parts per operand element).
size_t split_parts(const GemmVariant& v) {
  const int terms = std::stoi(cpp::math_tag(KernelArch::Sm90Split, v.math));
  return terms == 1 ? 1 : terms == 3 ? 2 : 3;
}

constexpr size_t kProducerWarps = 8;  // ws::ConvertingProducers::ProducerWarps (two producer warpgroups)

size_t split_smem_bytes(const GemmVariant& v, const SplitKernel& kernel) {
  const size_t parts = split_parts(v);
  const size_t stages = static_cast<size_t>(v.stages);
  const size_t stage_floats = static_cast<size_t>(v.tile_m + v.tile_n) * v.tile_k;
  const size_t part_stage = parts * stage_floats * 2, fp32_stage = stage_floats * 4;
  switch (kernel.schedule) {
    case Schedule::Ws: {
      // fp32 ring, 2 buffers x Parts 16-bit parts, PartsFp16Scaled: per-warp tile maxima, slack.
      const size_t max_slots = v.math == MathMode::F16x3 ? 2 * static_cast<size_t>(v.tile_m / 16) * 4 : 0;
      return stages * fp32_stage + 2 * part_stage + max_slots + 1024;
    }
    case Schedule::Pre: {
      // Part ring, int4 exponents of A and B per stage, full + empty mbarriers, the
      // operand-image epilogue's block maxima (2 x image blocks per tile x 8 consumer
      // warps), slack.
      const size_t image_slots = 2 * static_cast<size_t>(v.tile_n / v.tile_k) * 8;
      return stages * part_stage + 2 * stages * 16 + 2 * stages * 8 + image_slots * 4 + 1024;
    }
    case Schedule::Hybrid: {
      // Part ring, A's exponent records, full + empty mbarriers and B's exponents per
      // stage, 4 loaded mbarriers, B's tile maxima [group][parity][group warp], slack; then
      // B's fp32 ring (4 deep where that fits, else 2).
      const size_t b_stage = static_cast<size_t>(v.tile_n) * v.tile_k * 4;
      const size_t fixed = stages * part_stage + stages * (16 + 2 * 8 + 4) + 4 * 8 + 2 * kProducerWarps * 4 + 1024;
      return fixed + (fixed + 4 * b_stage <= kSm90SmemLimit ? 4 : 2) * b_stage;
    }
    default: {
      // Part ring, fp32 ring (4 deep where that fits, else 2), the A and B tile maxima
      // [group][parity][operand][group warp], exponents, full + empty + loaded mbarriers,
      // slack.
      const size_t load_stages = stages * part_stage + 4 * fp32_stage + 2048 <= kSm90SmemLimit ? 4 : 2;
      return stages * part_stage + load_stages * fp32_stage + 4 * kProducerWarps * 4 + stages * 8 +
             2 * stages * 8 + load_stages * 8 + 1024;
    }
  }
}

// The static_asserts of the split kernels' Configs, so that an illegal
// configuration is skipped with its reason instead of failing nvcc.
std::optional<std::string> split_config_illegal_reason(const GemmVariant& v) {
  const SplitKernel* kernel = split_kernel(v);
  if (kernel == nullptr)
    return std::string("sm90split variants schedule ws (split_gemm_sm90.cuh), coop (split_gemm_ws_sm90.cuh), pre "
                       "(split_gemm_pre_sm90.cuh) or hyb (split_gemm_hybrid_sm90.cuh)");
  if (v.cluster_m != 1 || v.cluster_n != 1)
    return std::string("sm90split variants run with cluster 1x1");
  if (v.scheduler != SchedulerKind::Dp && !(v.scheduler == SchedulerKind::Persistent && kernel->persistent))
    return fmt::format("sm90split variants are data-parallel (the kernel splits K itself){}",
                       kernel->persistent ? " or persistent" : "");
  if (v.tile_k != 32) return std::string("sm90split tile K must be 32 (one 128-byte fp32 row)");
  if (v.tile_n != 64 && v.tile_n != 128)
    return std::string("sm90split tile N must be 64 or 128 (accumulator registers)");
  if (kernel->consumer_ring) {
    if (v.tile_m != 128)
      return fmt::format("the warp-specialized split kernels ({}) have two consumer warpgroups of 64 rows: tile M "
                         "must be 128",
                         token(v.schedule));
    if (v.stages < 2 || v.stages > 8)
      return fmt::format("the warp-specialized split kernels ({}) need a part ring of 2..8 stages", token(v.schedule));
  } else {
    if (v.tile_m != 64 && v.tile_m != 128)
      return std::string("sm90split (ws) tile M must be 64 or 128 (one or two warpgroups)");
    if (v.stages < 3 || v.stages > 8) return std::string("sm90split (ws) needs 3..8 stages");
  }
  if (const size_t smem = split_smem_bytes(v, *kernel); smem > kSm90SmemLimit)
    return fmt::format("{} needs {} bytes of shared memory, over sm90's {} (227 KB): fewer stages", v.name(), smem,
                       kSm90SmemLimit);
  return std::nullopt;
}

// The math modes of FACT's split kernels (sm90split), in enumeration order.
constexpr std::array<MathMode, 4> kSplitMaths{MathMode::F16x3, MathMode::BF16x6, MathMode::BF16x3, MathMode::BF16};
// The pre kernels' tile: every sm90split pre variant enumerated is 128 x 128 x 32.
constexpr int kPreTileM = 128, kPreTileN = 128, kPreTileK = 32;

}  // namespace

const char* token(KernelArch v) { return lookup(kArch, v, kMissing).token; }
const char* token(MathMode v) { return lookup(kMath, v, kMissing).token; }
const char* token(IoType v) { return lookup(kIo, v, kMissing).token; }
const char* token(Schedule v) { return lookup(kSchedule, v, kMissing).token; }
const char* token(SchedulerKind v) { return lookup(kScheduler, v, kMissing).token; }
const char* token(EpilogueKind v) { return lookup(kEpilogue, v, kMissing).token; }

namespace {
const IoData& io_data(IoType v) {
  for (const IoData& d : kIoData)
    if (d.io == v) return d;
  throw std::logic_error(kMissing);
}
}  // namespace

const char* io_dtype_name(IoType v) { return dtype_name(io_data(v).dtype); }
int io_element_bytes(IoType v) { return dtype_bytes(io_data(v).dtype); }
std::optional<MathMode> io_native_math(IoType v) { return io_data(v).native_math; }
std::optional<IoType> io_type_of(const std::string& dtype) {
  const std::optional<DType> parsed = parse_dtype(dtype);
  for (const IoData& d : kIoData)
    if (parsed == d.dtype) return d.io;
  return std::nullopt;
}

char layout_letter(OperandLayout layout, bool is_b) {
  const bool k_major = is_b ? layout == OperandLayout::Col : layout == OperandLayout::Row;
  return k_major ? 't' : 'n';
}

namespace cpp {
std::string math_tag(KernelArch arch, MathMode math) {
  for (const auto& t : kMathTags)
    if (t.arch == arch && t.math == math) return t.cpp;
  return "";
}
const char* kernel_schedule(Schedule s) { return lookup(kSchedule, s, kMissing).cpp; }
const char* epilogue_schedule(Schedule s) { return lookup(kEpilogueSchedule, s, kMissing).cpp; }
const char* tile_scheduler(SchedulerKind s) { return lookup(kScheduler, s, kMissing).cpp; }
const char* layout(OperandLayout l) { return lookup(kLayout, l, kMissing).cpp; }
const char* element(IoType v) { return lookup(kIo, v, kMissing).cpp; }
const char* epilogue(EpilogueKind e) { return lookup(kEpilogue, e, kMissing).cpp; }
}  // namespace cpp

const SplitKernel* split_kernel(const GemmVariant& v) {
  if (v.arch != KernelArch::Sm90Split) return nullptr;
  for (const SplitKernel& k : kSplitKernels)
    if (k.schedule == v.schedule) return &k;
  return nullptr;
}

std::string ImageFormatSpec::name() const {
  return fmt::format("fact-split-image-v1:{}:p{}:r{}:k{}:sw64", f16_scaled ? "f16s" : "bf16", parts, rows, tile_k);
}

namespace {
std::optional<ImageFormatSpec> image_format_spec(const GemmVariant& v) {
  const SplitKernel* kernel = split_kernel(v);
  if (kernel == nullptr || kernel->schedule != Schedule::Pre) return std::nullopt;
  return ImageFormatSpec{v.math == MathMode::F16x3, static_cast<int>(split_parts(v)), v.tile_m, v.tile_k};
}
}  // namespace

std::string operand_image_format(const GemmVariant& v) {
  const auto spec = image_format_spec(v);
  return spec ? spec->name() : "";
}

std::vector<ImageFormatSpec> split_image_format_specs() {
  std::vector<ImageFormatSpec> out;
  for (MathMode math : kSplitMaths) {
    GemmVariant v;
    v.arch = KernelArch::Sm90Split, v.math = math, v.schedule = Schedule::Pre;
    v.tile_m = kPreTileM, v.tile_n = kPreTileN, v.tile_k = kPreTileK;
    const ImageFormatSpec spec = *image_format_spec(v);
    if (std::none_of(out.begin(), out.end(), [&](const ImageFormatSpec& s) { return s.name() == spec.name(); }))
      out.push_back(spec);
  }
  return out;
}

std::vector<std::string> split_image_formats() {
  std::vector<std::string> out;
  for (const ImageFormatSpec& spec : split_image_format_specs()) out.push_back(spec.name());
  return out;
}

std::string GemmVariant::name() const {
  std::string scheduler_part = token(scheduler);
  if (scheduler == SchedulerKind::SplitK) scheduler_part += std::to_string(splits);
  return fmt::format("gemm_{}_{}_{}_{}x{}x{}_c{}x{}_{}_{}_s{}_{}{}_{}", token(arch), token(math), token(io), tile_m,
                     tile_n, tile_k, cluster_m, cluster_n, token(schedule), scheduler_part,
                     stages == 0 ? std::string("auto") : std::to_string(stages), layout_letter(layout_a, false),
                     layout_letter(layout_b, true), token(epilogue)) +
         (chain_key.empty() ? std::string() : "_evt" + chain_key);
}

std::optional<GemmVariant> parse_variant_name(const std::string& name) {
  const auto parts = split(name, '_');
  if ((parts.size() != 11 && parts.size() != 12) || parts[0] != "gemm") return std::nullopt;
  GemmVariant v;
  if (parts.size() == 12) {
    // _evt<8 lowercase hex digits>: the epilogue chain key
    const std::string& evt = parts[11];
    if (evt.size() != 11 || evt.compare(0, 3, "evt") != 0 ||
        !std::all_of(evt.begin() + 3, evt.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
      return std::nullopt;
    v.chain_key = evt.substr(3);
  }
  auto arch = from_token(kArch, parts[1]);
  auto math = from_token(kMath, parts[2]);
  auto io = from_token(kIo, parts[3]);
  if (!arch || !math || !io) return std::nullopt;
  v.arch = *arch, v.math = *math, v.io = *io;
  const auto tile = split(parts[4], 'x');
  if (tile.size() != 3) return std::nullopt;
  auto tm = to_int(tile[0]), tn = to_int(tile[1]), tk = to_int(tile[2]);
  if (!tm || !tn || !tk) return std::nullopt;
  v.tile_m = *tm, v.tile_n = *tn, v.tile_k = *tk;
  if (parts[5].size() < 4 || parts[5][0] != 'c') return std::nullopt;
  const auto cluster = split(parts[5].substr(1), 'x');
  if (cluster.size() != 2) return std::nullopt;
  auto cm = to_int(cluster[0]), cn = to_int(cluster[1]);
  if (!cm || !cn) return std::nullopt;
  v.cluster_m = *cm, v.cluster_n = *cn;
  auto schedule = from_token(kSchedule, parts[6]);
  if (!schedule) return std::nullopt;
  v.schedule = *schedule;
  if (parts[7].rfind("splitk", 0) == 0) {
    auto n = to_int(parts[7].substr(6));
    if (!n || *n < 2) return std::nullopt;
    v.scheduler = SchedulerKind::SplitK, v.splits = *n;
  } else {
    auto scheduler = from_token(kScheduler, parts[7]);
    if (!scheduler || *scheduler == SchedulerKind::SplitK) return std::nullopt;
    v.scheduler = *scheduler;
  }
  if (parts[8].size() < 2 || parts[8][0] != 's') return std::nullopt;
  if (parts[8] == "sauto") {
    v.stages = 0;
  } else {
    auto s = to_int(parts[8].substr(1));
    if (!s || *s < 1) return std::nullopt;
    v.stages = *s;
  }
  if (parts[9].size() != 2) return std::nullopt;
  auto letter = [](char c, bool is_b) -> std::optional<OperandLayout> {
    if (c == 't') return is_b ? OperandLayout::Col : OperandLayout::Row;
    if (c == 'n') return is_b ? OperandLayout::Row : OperandLayout::Col;
    return std::nullopt;
  };
  auto la = letter(parts[9][0], false), lb = letter(parts[9][1], true);
  if (!la || !lb) return std::nullopt;
  v.layout_a = *la, v.layout_b = *lb;
  auto epilogue = from_token(kEpilogue, parts[10]);
  if (!epilogue) return std::nullopt;
  v.epilogue = *epilogue;
  if (v.name() != name) return std::nullopt;  // non-canonical spelling (e.g. leading zeros)
  return v;
}

GemmProblemDesc gemm_problem_from_json(const nlohmann::json& g) {
  auto need = [&](const nlohmann::json& obj, const char* key) -> const nlohmann::json& {
    if (!obj.is_object() || !obj.contains(key) || obj.at(key).is_null())
      throw std::runtime_error(fmt::format("plan pattern 'gemm' lacks field '{}'", key));
    return obj.at(key);
  };
  auto layout = [&](const nlohmann::json& operand, const char* which) {
    const std::string text = need(operand, "layout").get<std::string>();
    if (text == "row") return OperandLayout::Row;
    if (text == "col") return OperandLayout::Col;
    throw std::runtime_error(fmt::format("gemm operand {} has layout '{}' (expected row or col)", which, text));
  };
  GemmProblemDesc p;
  try {
    p.batch = need(g, "batch").get<int64_t>();
    p.m = need(g, "m").get<int64_t>();
    p.n = need(g, "n").get<int64_t>();
    p.k = need(g, "k").get<int64_t>();
    const auto& a = need(g, "a");
    const auto& b = need(g, "b");
    const auto& d = need(g, "d");
    p.layout_a = layout(a, "a");
    p.layout_b = layout(b, "b");
    p.ld_a = need(a, "ld").get<int64_t>();
    p.ld_b = need(b, "ld").get<int64_t>();
    p.ld_d = need(d, "ld").get<int64_t>();
    p.batch_stride_a = a.value("batch_stride", int64_t{0});
    p.batch_stride_b = b.value("batch_stride", int64_t{0});
    p.batch_stride_d = d.value("batch_stride", int64_t{0});
    const auto& e = need(g, "epilogue");
    const std::string kind = need(e, "kind").get<std::string>();
    if (kind == "none") {
      p.epilogue = EpilogueKind::None;
    } else if (kind == "bias") {
      p.epilogue = EpilogueKind::Bias;
    } else if (kind == "c") {
      p.epilogue = EpilogueKind::C;
    } else {
      throw std::runtime_error(fmt::format("unknown epilogue kind '{}'", kind));
    }
    p.ld_e = e.value("ld", int64_t{0});
    p.batch_stride_e = e.value("batch_stride", int64_t{0});
    p.element_a = g.value("element_a", std::string("float32"));
    p.element_b = g.value("element_b", std::string("float32"));
    p.element_d = g.value("element_d", std::string("float32"));
  } catch (const nlohmann::json::exception& ex) {
    throw std::runtime_error(std::string("plan pattern 'gemm' has a field of the wrong type: ") + ex.what());
  }
  if (p.batch < 1 || p.m < 1 || p.n < 1 || p.k < 1)
    throw std::runtime_error(fmt::format("gemm sizes must be positive (batch {}, m {}, n {}, k {})", p.batch, p.m,
                                         p.n, p.k));
  return p;
}

ToleranceClass tolerance_class(double tolerance) {
  // Anything tighter than half-way (on a log scale) between 1e-4 and 1e-2
  // needs fp32-faithful math.
  return tolerance < 1e-3 ? ToleranceClass::Fp32Faithful : ToleranceClass::Relaxed;
}

bool variant_admitted(const GemmVariant& v, ToleranceClass cls) {
  return v.io != IoType::F32 || math_admitted(v.math, cls);
}

std::optional<IoType> problem_io_type(const GemmProblemDesc& p) {
  if (p.element_a != p.element_b || p.element_a != p.element_d) return std::nullopt;
  return io_type_of(p.element_a);
}

bool math_admitted(MathMode math, ToleranceClass cls) {
  switch (math) {
    case MathMode::F32:
    case MathMode::TF32x3:
    case MathMode::BF16x6:
    case MathMode::F16x3:
      return true;
    case MathMode::TF32:
    case MathMode::BF16:
    case MathMode::F16:
    case MathMode::BF16x3:
      return cls == ToleranceClass::Relaxed;
  }
  return false;
}

VariantSet parse_variant_set(const std::string& text) {
  if (text.empty() || text == "default") return VariantSet::Default;
  if (text == "all") return VariantSet::All;
  throw std::runtime_error(fmt::format("variant set '{}' is not 'default' or 'all'", text));
}

namespace {

// Elements per 16 bytes of an element type the problem names (fp32: 4, fp16 / bf16: 8).
int elements_per_16_bytes(const std::string& dtype) {
  const std::optional<IoType> io = io_type_of(dtype);
  if (!io) throw std::logic_error("no GEMM variant reads dtype " + dtype);
  return 16 / io_element_bytes(*io);
}

// The first extent, leading dimension or batch stride of the problem that keeps it from
// 16-byte units (TMA, 16-byte cp.async: multiples of 4 fp32 or 8 fp16 / bf16 elements):
// A's and B's, and with `output` D's and C's too; nullopt when there is none.
std::optional<std::string> not_16_byte_aligned(const GemmProblemDesc& p, bool output) {
  const bool a_kmajor = p.layout_a == OperandLayout::Row, b_kmajor = p.layout_b == OperandLayout::Col;
  const bool batched = p.batch > 1;
  const int unit_a = elements_per_16_bytes(p.element_a), unit_b = elements_per_16_bytes(p.element_b);
  const int unit_d = output ? elements_per_16_bytes(p.element_d) : 1;  // C has D's type
  const std::tuple<const char*, int64_t, int> extents[] = {
      {a_kmajor ? "k (A's rows)" : "m (A's columns)", a_kmajor ? p.k : p.m, unit_a},
      {b_kmajor ? "k (B's columns)" : "n (B's rows)", b_kmajor ? p.k : p.n, unit_b},
      {"ld of A", p.ld_a, unit_a},
      {"ld of B", p.ld_b, unit_b},
      {"batch stride of A", batched ? p.batch_stride_a : 0, unit_a},
      {"batch stride of B", batched ? p.batch_stride_b : 0, unit_b},
      {"n (D's rows)", output ? p.n : 0, unit_d},
      {"ld of D", output ? p.ld_d : 0, unit_d},
      {"batch stride of D", output && batched ? p.batch_stride_d : 0, unit_d},
      {"ld of C", output && p.epilogue == EpilogueKind::C ? p.ld_e : 0, unit_d},
      {"batch stride of C", output && batched && p.epilogue == EpilogueKind::C ? p.batch_stride_e : 0, unit_d},
  };
  for (const auto& [what, value, unit] : extents)
    if (value % unit != 0) return fmt::format("{} = {} is not a multiple of {} (16-byte rows)", what, value, unit);
  return std::nullopt;
}

// Whether an sm90 variant's TMA reads A and B as they are in memory (no pre-pass image):
// tf32 on fp32 operands, and every 16-bit I/O variant.
bool reads_operands_directly(const GemmVariant& v) {
  return v.arch == KernelArch::Sm90 && (v.math == MathMode::TF32 || v.io != IoType::F32);
}

}  // namespace

std::optional<std::string> variant_illegal_reason(const GemmVariant& v, const GemmProblemDesc& p) {
  const std::optional<IoType> io = problem_io_type(p);
  if (!io)
    return fmt::format("operands are {} x {} -> {}; the GEMM kernels take one element type for A, B and D "
                       "(float32, float16 or bfloat16)",
                       p.element_a, p.element_b, p.element_d);
  if (v.io != *io)
    return fmt::format("the variant reads and writes {} ({} I/O); this problem's A, B and D are {}",
                       io_dtype_name(v.io), token(v.io), p.element_a);
  if (!family_has_math(v.arch, v.math))
    return fmt::format("the {} family has no {} math mode", token(v.arch), token(v.math));
  if (v.io != IoType::F32) {
    if (v.arch != KernelArch::Sm90)
      return fmt::format("16-bit I/O ({}) runs on the sm90 family (CUTLASS 3.x) only; the {} kernels take float32 "
                         "operands and output",
                         token(v.io), token(v.arch));
    if (v.math != *io_native_math(v.io))
      return fmt::format("{} I/O runs tensor-core math of its own type ({}), not {}", token(v.io),
                         token(*io_native_math(v.io)), token(v.math));
  }
  if (!v.chain_key.empty() && v.arch != KernelArch::Sm90 && v.arch != KernelArch::Sm90Split)
    return fmt::format("the {} family cannot run an epilogue chain (sm90's EVT epilogue and the sm90split "
                       "kernels' element-wise store take one)",
                       token(v.arch));
  if (v.layout_a != p.layout_a || v.layout_b != p.layout_b || v.epilogue != p.epilogue)
    return std::string("variant layouts / epilogue differ from the problem's");
  const bool a_kmajor = p.layout_a == OperandLayout::Row, b_kmajor = p.layout_b == OperandLayout::Col;
  const int64_t a_contig = a_kmajor ? p.k : p.m, b_contig = b_kmajor ? p.k : p.n;
  if (p.ld_a < a_contig || p.ld_b < b_contig || p.ld_d < p.n)
    return std::string("a leading dimension is smaller than its contiguous extent");
  if (v.arch == KernelArch::Sm90) {
    if (auto why = not_16_byte_aligned(p, true))
      return fmt::format("CUTLASS sm90 kernels move A, B, C and D by TMA: {}", *why);
    if (v.schedule != Schedule::Coop && v.schedule != Schedule::Pingpong && v.schedule != Schedule::Ws)
      return std::string("sm90 variants use a TMA warp-specialized schedule");
    if (v.schedule == Schedule::Coop && v.tile_m < 128)
      return std::string("the cooperative schedule needs tile M >= 128");
    if ((v.scheduler == SchedulerKind::StreamK || v.scheduler == SchedulerKind::SplitK) && v.schedule != Schedule::Coop)
      return std::string("stream-K / split-K on sm90 needs the cooperative schedule");
    // BASELINES.md: TF32 wgmma with an N-contiguous B returned non-finite values.
    if (v.math == MathMode::TF32 && (!a_kmajor || !b_kmajor))
      return std::string("TF32 wgmma needs K-major operands (A row-major, B column-major)");
    if (reads_operands_directly(v) && p.batch > 1 && (p.batch_stride_a == 0 || p.batch_stride_b == 0))
      return fmt::format("{} {} reads A and B by TMA as they are: it needs non-zero batch strides", token(v.math),
                         v.io == IoType::F32 ? "on fp32 operands" : "I/O");
  }
  if (v.arch == KernelArch::Sm90Split) {
    if (auto why = split_config_illegal_reason(v)) return why;
    if (const SplitKernel* kernel = split_kernel(v); !kernel->any_alignment) {
      if (auto why = not_16_byte_aligned(p, false))
        return fmt::format("the {} split kernel loads fp32 A and B in 16-byte units (the pre kernel reads any "
                           "alignment): {}",
                           token(v.schedule), *why);
    }
  }
  if (v.arch == KernelArch::Sm80) {
    if (v.math == MathMode::TF32x3) {
      if (auto why = not_16_byte_aligned(p, true))
        return fmt::format("tf32x3 (alignment 4: 16-byte cp.async and stores): {}", *why);
    }
    if (v.scheduler == SchedulerKind::SplitK && p.batch > 1)
      return std::string("sm80 split-K variants run single-batch problems only");
    if (v.scheduler != SchedulerKind::Dp && v.scheduler != SchedulerKind::SplitK)
      return std::string("sm80 variants schedule data-parallel or split-K");
  }
  if (v.scheduler == SchedulerKind::SplitK && v.splits < 2) return std::string("split-K needs at least 2 splits");
  return std::nullopt;
}

int choose_split_count(const GemmProblemDesc& p, int tile_m, int tile_n, int sm_count) {
  const int64_t t = std::max<int64_t>(1, p.batch * tiles(p.m, tile_m) * tiles(p.n, tile_n));
  int64_t want = std::max<int64_t>(2, (2 * sm_count) / t);
  int splits = 2;
  while (splits * 2 <= want && splits < 64) splits *= 2;
  // Keep each split at least a few k-tiles deep.
  while (splits > 2 && p.k / splits < 512) splits /= 2;
  return splits;
}

Enumeration enumerate_gemm_variants(const GemmProblemDesc& p, double tolerance, const std::string& target_arch,
                                    VariantSet set) {
  Enumeration out;
  const ToleranceClass cls = tolerance_class(tolerance);
  std::vector<KernelArch> families;
  if (target_arch == "sm90a" || target_arch == "sm90") {
    families = {KernelArch::Sm90Split, KernelArch::Sm90, KernelArch::Sm80};
  } else if (target_arch.rfind("sm8", 0) == 0) {
    families = {KernelArch::Sm80};
  } else {
    out.reason = fmt::format("no kernel family targets arch '{}' (supported: sm90a, sm80)", target_arch);
    return out;
  }
  const bool all = set == VariantSet::All;
  // A 16-bit problem's candidates are the sm90 16-bit I/O variants; the other families'
  // (fp32 I/O) are still enumerated, to be skipped with the reason.
  const IoType io = problem_io_type(p).value_or(IoType::F32);
  const std::optional<MathMode> native_math = io_native_math(io);
  // Small-MN large-K: too few output tiles to fill the SMs; K must be split.
  const bool small_mn_large_k = p.batch * tiles(p.m, 128) * tiles(p.n, 128) < 132 && p.k >= 8192;

  std::vector<GemmVariant> raw;
  auto base = [&](KernelArch arch, MathMode math) {
    GemmVariant v;
    v.arch = arch, v.math = math;
    v.layout_a = p.layout_a, v.layout_b = p.layout_b, v.epilogue = p.epilogue;
    return v;
  };
  auto add = [&](GemmVariant v, int tm, int tn, int tk, int cm, int cn, Schedule sch, SchedulerKind sk, int stages,
                 int splits = 1) {
    v.tile_m = tm, v.tile_n = tn, v.tile_k = tk, v.cluster_m = cm, v.cluster_n = cn;
    v.schedule = sch, v.scheduler = sk, v.stages = stages, v.splits = splits;
    raw.push_back(v);
  };

  for (KernelArch family : families) {
    if (family == KernelArch::Sm90) {
      const std::vector<MathMode> maths =
          native_math ? std::vector<MathMode>{*native_math}
                      : std::vector<MathMode>{MathMode::F16x3, MathMode::BF16x6, MathMode::BF16x3,
                                              MathMode::BF16,  MathMode::F16,    MathMode::TF32};
      for (MathMode math : maths) {
        GemmVariant b = base(family, math);
        b.io = io;
        if (!variant_admitted(b, cls)) continue;
        // The relaxed class tries the single-product modes and bf16x3, and keeps
        // f16x3: DESIGN.md's rule also bounds the largest error by 2x eager fp32's,
        // which single-product modes miss on zero-mean data even at 1e-2
        // (docs/notes/NOTES.md), so a 1e-2 run needs an fp32-faithful candidate
        // to fall back on.
        // The CUTLASS split modes lost to FACT's split kernels on every shape measured
        // (H100: the L1 workloads and the minGPT block's linears, f16x3 1.3-3.3x slower
        // than pre / coop; bf16x6 slower than f16x3 everywhere, the 2x1 cluster never
        // faster than 1x1, the 64x128 ping-pong slower than 128x128 cooperative): one
        // candidate per mode stays as the CUTLASS alternative, bf16x6 and the other tiles
        // in "all" (each is a heavy nvcc unit: ~1 min).
        if (!all && math == MathMode::BF16x6) continue;
        const int tk = math == MathMode::TF32 ? 32 : 64;  // 128-byte rows of the smem swizzle
        const bool promoted = math == MathMode::BF16x3 || math == MathMode::BF16x6 || math == MathMode::F16x3;
        if (!all) {
          // Too few output tiles for the SMs: only K-splitting schedules are worth
          // compiling (data-parallel tiles also accumulate K serially: measured
          // failing 1e-4 at K = 524288).
          if (small_mn_large_k) {
            add(b, 128, 128, tk, 1, 1, Schedule::Coop, SchedulerKind::StreamK, 0);
            add(b, 128, 128, tk, 1, 1, Schedule::Coop, SchedulerKind::SplitK, 0, choose_split_count(p, 128, 128));
          } else if (promoted) {
            // The promotion keeps a second fp32 accumulator in registers: a 128x128
            // cooperative tile keeps both within budget (H100, 4096^3 f16x3: 128x128x64
            // 0.90 ms; 128x256x64 2.70 ms, spilling; 128x128x128 1.04 ms). The 2x1
            // cluster and the 64x128 ping-pong tile (never faster, see above) in "all".
            add(b, 128, 128, tk, 1, 1, Schedule::Coop, SchedulerKind::Persistent, 0);
          } else {
            // 16-bit I/O: the two large cooperative tiles and the ping-pong one (each TU
            // ~1 min of nvcc); the 2x1 cluster in "all".
            add(b, 128, 256, tk, 1, 1, Schedule::Coop, SchedulerKind::Persistent, 0);
            if (b.io == IoType::F32) add(b, 128, 256, tk, 2, 1, Schedule::Coop, SchedulerKind::Persistent, 0);
            add(b, 256, 128, tk, 1, 1, Schedule::Coop, SchedulerKind::Persistent, 0);
            add(b, 128, 128, tk, 1, 1, Schedule::Pingpong, SchedulerKind::Persistent, 0);
          }
        } else {
          const int tile_list[][2] = {{64, 128}, {128, 128}, {128, 256}, {256, 128}, {64, 256}};
          const int cluster_list[][2] = {{1, 1}, {2, 1}, {1, 2}};
          for (const auto& t : tile_list)
            for (const auto& c : cluster_list)
              for (Schedule s : {Schedule::Coop, Schedule::Pingpong})
                for (SchedulerKind k : {SchedulerKind::Persistent, SchedulerKind::StreamK}) {
                  add(b, t[0], t[1], tk, c[0], c[1], s, k, 0);
                }
          if (small_mn_large_k)
            for (int splits : {4, 8, 16, 32})
              add(b, 128, 128, tk, 1, 1, Schedule::Coop, SchedulerKind::SplitK, 0, splits);
        }
      }
    } else if (family == KernelArch::Sm90Split) {
      // FACT's own split kernels (they pick split-K themselves): scaled-fp16 Terms 3
      // (f16x3, more accurate than cuBLAS fp32 on the H100 runs of
      // docs/notes/split_gemm.md) and bf16 Terms 6 for the fp32 class, Terms 1
      // (bf16 rounding) and 3 for the relaxed one. Schedules (variant.hpp: SplitKernel):
      // ws = v2 (TileM 64/128); coop = v3, the split on two TMA-fed producer warpgroups;
      // pre = v3 with the operands split once by a pre-pass; hyb = v3 with A split by a
      // pre-pass and B by the producers. H100, f16x3, 4096^3 / bmm / 256x256x524288 (ms,
      // session 11, dev check binary): coop 1.12 / 2.36 / 0.56, pre 0.66 / 2.25 / 1.27,
      // hyb 0.89-0.94 / 2.10-2.17 / 0.88; v2 (session 5) 1.81 / 3.77 / 1.07. A pre-pass
      // costs a read and a write of its operand, which only pays where each operand tile
      // is re-read by many output tiles: pre and hyb are not offered for small-MN large-K
      // problems (unless "all"). bf16x6 on v3 (twice the products) in "all" only.
      for (MathMode math : kSplitMaths) {
        if (!math_admitted(math, cls)) continue;
        if (cls == ToleranceClass::Relaxed && math == MathMode::BF16x6 && !all) continue;
        const GemmVariant b = base(family, math);
        // v2 lost to coop or pre by 1.4-2.3x on every shape measured (the L1 workloads and
        // the minGPT block's four linears, H100, sessions 5-10): default only for bf16x6,
        // whose one split kernel outside "all" it is (the fallback where the scaled-fp16
        // parts' range fails a verification).
        if (all || math == MathMode::BF16x6) add(b, 128, 128, 32, 1, 1, Schedule::Ws, SchedulerKind::Dp, 4);
        if (all) {
          add(b, 64, 128, 32, 1, 1, Schedule::Ws, SchedulerKind::Dp, 4);
          add(b, 128, 64, 32, 1, 1, Schedule::Ws, SchedulerKind::Dp, 4);
          add(b, 128, 128, 32, 1, 1, Schedule::Ws, SchedulerKind::Dp, 3);
        }
        if (math == MathMode::BF16x6 && !all) continue;
        // Coop: 3 part stages leave room for a 4-deep fp32 ring (each producer group's next
        // tile in flight; 4 part stages leave 2): 2-3% faster on large-K (session 11).
        add(b, 128, 128, 32, 1, 1, Schedule::Coop, SchedulerKind::Dp, 3);
        // Hyb: B's ring is half as wide, so 5 part stages of 2 parts fit beside 4 fp32 stages.
        // Launched persistent (dp in "all"): H100, same process, bmm 2.09-2.12 ms persistent
        // against 2.05-2.21 dp, 4096^3 0.89-0.90 against 0.94-0.96 (session 11). Offered
        // where B is re-read by few row tiles (M / 128 <= 8), so that pre's pass over B
        // cannot pay: it won the bmm (4 row tiles: 2.10 against pre's 2.21 ms) and lost
        // where B is re-read often (4096^3, 32 row tiles: 0.93 against 0.67; the minGPT
        // block's linears, 512 row tiles: 0.78-2.59 against 0.56-1.97).
        const bool b_reread_little = tiles(p.m, 128) <= 8;
        if ((!small_mn_large_k && b_reread_little) || all) {
          const int hyb_stages = math == MathMode::BF16x6 ? 3 : math == MathMode::BF16 ? 8 : 5;
          add(b, 128, 128, 32, 1, 1, Schedule::Hybrid, SchedulerKind::Persistent, hyb_stages);
          if (all) add(b, 128, 128, 32, 1, 1, Schedule::Hybrid, SchedulerKind::Dp, hyb_stages);
        }
        // Pre's ring holds only parts: as deep as 227 KB allows (6 stages of 2 parts). One
        // CTA per tile (dp) or one persistent CTA per SM: which is faster depends on the
        // shape (H100, same process: persistent −5% on 4096^3, −8% on the bmm, +5% at
        // 65536x768x3072; docs/notes/split_gemm.md), so both are tuned.
        if (!small_mn_large_k || all)
          for (SchedulerKind sk : {SchedulerKind::Dp, SchedulerKind::Persistent})
            add(b, kPreTileM, kPreTileN, kPreTileK, 1, 1, Schedule::Pre, sk,
                math == MathMode::BF16x6 ? 4 : math == MathMode::BF16 ? 8 : 6);
      }
    } else {
      for (MathMode math : {MathMode::TF32x3, MathMode::F32}) {
        if (!math_admitted(math, cls)) continue;
        const GemmVariant b = base(family, math);
        // Small-MN large-K: split-K only (as for sm90), unless "all".
        const bool dp = all || !small_mn_large_k;
        if (math == MathMode::TF32x3) {
          if (dp) add(b, 128, 128, 16, 1, 1, Schedule::Mstage, SchedulerKind::Dp, 4);
          if (dp) add(b, 128, 64, 16, 1, 1, Schedule::Mstage, SchedulerKind::Dp, 3);
          if (all) add(b, 256, 128, 16, 1, 1, Schedule::Mstage, SchedulerKind::Dp, 3);
          if (small_mn_large_k)
            add(b, 128, 128, 16, 1, 1, Schedule::Mstage, SchedulerKind::SplitK, 4, choose_split_count(p, 128, 128));
        } else {
          if (dp) add(b, 128, 128, 8, 1, 1, Schedule::Simt, SchedulerKind::Dp, 3);
          if (all) add(b, 128, 64, 8, 1, 1, Schedule::Simt, SchedulerKind::Dp, 4);
          if (small_mn_large_k)
            add(b, 128, 128, 8, 1, 1, Schedule::Simt, SchedulerKind::SplitK, 3, choose_split_count(p, 128, 128));
        }
      }
    }
  }

  for (const auto& v : raw) {
    const std::string name = v.name();
    if (std::any_of(out.variants.begin(), out.variants.end(), [&](const GemmVariant& o) { return o.name() == name; }))
      continue;
    if (auto why = variant_illegal_reason(v, p)) {
      out.skipped.push_back({name, *why});
      continue;
    }
    out.variants.push_back(v);
  }
  if (out.variants.empty() && out.reason.empty()) {
    // The example names a variant of the problem's I/O type where there is one (a 16-bit
    // problem's fp32-I/O skips only repeat its dtype).
    auto example = std::find_if(out.skipped.begin(), out.skipped.end(), [&](const SkippedVariant& s) {
      const auto v = parse_variant_name(s.name);
      return v && v->io == io;
    });
    if (example == out.skipped.end()) example = out.skipped.begin();
    out.reason = out.skipped.empty() ? std::string("no variant admitted for this tolerance and arch")
                                     : fmt::format("every variant is illegal for this problem, e.g. {}: {}",
                                                   example->name, example->reason);
  }
  return out;
}

}  // namespace fact

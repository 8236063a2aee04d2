// Attention realizer: the variant spaces of templates/attention_sm90.cuh (f16x3 split
// operands on wgmma, sm90a: compiled head dim and promotion intervals) and
// templates/attention_sm80.cuh (CUTLASS example 41's forward kernel on fp32 = 3xTF32
// tensor cores: tile kQueriesPerBlock x kKeysPerBlock and kMaxK); names, legality per plan
// payload, enumeration and the thin translation unit per variant.
#include <algorithm>
#include <regex>
#include <stdexcept>

#include <fmt/format.h>

#include "fact/build.hpp"
#include "fact/emit.hpp"
#include "fact/pattern_realizer.hpp"
#include "rule_realizer_common.hpp"

namespace fact {
namespace {

constexpr int kUnboundedMaxK = 65536;  // xformers' "any head dim" kMaxK
// 16-byte vector loads of fp32 Q and K (the kernel's kAlignmentQ/K): offsets and
// seq/head/batch strides in elements must be multiples of this.
constexpr int64_t kAlignmentElements = 4;

struct Tile {
  int queries, keys;
};
constexpr Tile kTiles[] = {{32, 128}, {64, 64}, {64, 128}};
constexpr int kMaxKs[] = {64, 128, kUnboundedMaxK};

// Sm90F16x3: compiled head dims, keys per tile (32 at head dim 128, where 64-key K/V parts
// and their fp32 stage would not fit 227 KiB of shared memory next to Q's parts), and the
// promotion intervals in default-set order: per S chunk a group, PV chunk 64 first (fewer
// promotions: measured ~3% faster on the minGPT block's attention, session 9).
constexpr int kSm90HeadDims[] = {32, 64, 96, 128};
constexpr int kSm90PvChunks[] = {64, 32};
constexpr int kSm90SChunk = 32;  // the other S chunk is the whole head dim
int sm90_keys_per_tile(int head_dim) { return head_dim == 128 ? 32 : 64; }

constexpr const char* kSm90Source =
    "#include \"attention_sm90.cuh\"\n"
    "#include \"fact_export.cuh\"\n"
    "\n"
    "using FactConfig = fact::attention_sm90::Config<\n"
    "    /*head dim*/ ${head_dim}, /*keys per tile*/ ${keys}, /*S chunk*/ ${s_chunk}, /*PV chunk*/ ${pv_chunk}>;\n"
    "\n"
    "FACT_EXPORT_ATTENTION(fact::attention_sm90::Operation<FactConfig>, \"${name}\")\n";

constexpr const char* kSource =
    "#include \"attention_sm80.cuh\"\n"
    "#include \"fact_export.cuh\"\n"
    "\n"
    "using FactConfig = fact::attention_sm80::Config<\n"
    "    /*queries per block*/ ${queries}, /*keys per block*/ ${keys}, /*kMaxK*/ ${max_k}>;\n"
    "\n"
    "FACT_EXPORT_ATTENTION(fact::attention_sm80::Operation<FactConfig>, \"${name}\")\n";

bool single_value_iteration(const AttentionVariant& v) { return v.max_k <= v.keys_per_block; }
bool is_sm90(const AttentionVariant& v) { return v.family == AttentionFamily::Sm90F16x3; }
bool sm90_target(const std::string& target_arch) { return target_arch == "sm90a" || target_arch == "sm90"; }

class AttentionRealizer final : public PatternRealizer {
 public:
  const char* rule() const override { return "attention"; }

  RealizerEnumeration enumerate(const nlohmann::json& pattern, double tolerance, const std::string& target_arch,
                                VariantSet set) const override {
    const AttentionProblemDesc p = attention_problem_from_json(rule_payload(pattern, rule()));
    if (!(target_arch == "sm90a" || target_arch == "sm90" || target_arch.rfind("sm8", 0) == 0)) {
      RealizerEnumeration out;
      out.reason = fmt::format("no attention kernel targets arch '{}' (supported: sm90a, sm80)", target_arch);
      return out;
    }
    return to_realizer_enumeration(enumerate_attention_variants(p, tolerance, set, target_arch),
                                   [&](const AttentionVariant& v) { return candidate(v, target_arch); });
  }

  std::optional<RealizerCandidate> candidate_named(const nlohmann::json& pattern, const std::string& name,
                                                   double /*tolerance*/, const std::string& target_arch) const override {
    auto v = parse_attention_variant_name(name);
    if (!v || !pattern.contains("attention")) return std::nullopt;
    const AttentionProblemDesc p = attention_problem_from_json(pattern.at("attention"));
    if (attention_problem_unsupported_reason(p) || attention_illegal_reason(*v, p)) return std::nullopt;
    if (is_sm90(*v) && !sm90_target(target_arch)) return std::nullopt;
    return candidate(*v, target_arch);
  }

 private:
  static RealizerCandidate candidate(const AttentionVariant& v, const std::string& target_arch) {
    if (is_sm90(v)) return {v.name(), token(MathMode::F16x3), nvcc_flags(KernelArch::Sm90, target_arch),
                            emit_attention_source(v)};
    // An Sm80 kernel (mma.sync): compute_80 PTX to the target's SASS (sm_90 on Hopper).
    return {v.name(), "tf32x3", nvcc_flags(KernelArch::Sm80, target_arch), emit_attention_source(v)};
  }
};

int64_t need_int(const nlohmann::json& obj, const char* key, const char* where) {
  if (!obj.is_object() || !obj.contains(key) || !obj.at(key).is_number_integer())
    throw std::runtime_error(fmt::format("plan pattern 'attention' {} lacks integer field '{}'", where, key));
  return obj.at(key).get<int64_t>();
}

AttentionOperandDesc operand_from_json(const nlohmann::json& a, const char* role) {
  if (!a.is_object() || !a.contains("strides"))
    throw std::runtime_error(fmt::format("plan pattern 'attention' lacks operand '{}' with strides", role));
  AttentionOperandDesc o;
  o.offset = need_int(a, "offset", role);
  const auto& s = a.at("strides");
  o.batch = need_int(s, "batch", role);
  o.head = need_int(s, "head", role);
  o.seq = need_int(s, "seq", role);
  o.dim = need_int(s, "dim", role);
  return o;
}

}  // namespace

std::string AttentionVariant::name() const {
  if (is_sm90(*this))
    return fmt::format("attention_sm90_f16x3_f32_d{}_k{}_s{}_pv{}", max_k, keys_per_block, s_chunk, pv_chunk);
  return fmt::format("attention_sm80_tf32x3_f32_{}x{}_maxk{}", queries_per_block, keys_per_block, max_k);
}

std::optional<AttentionVariant> parse_attention_variant_name(const std::string& name) {
  static const std::regex sm80(R"(attention_sm80_tf32x3_f32_(\d+)x(\d+)_maxk(\d+))");
  static const std::regex sm90(R"(attention_sm90_f16x3_f32_d(\d+)_k(\d+)_s(\d+)_pv(\d+))");
  std::smatch m;
  AttentionVariant v;
  try {
    if (std::regex_match(name, m, sm80)) {
      v.queries_per_block = std::stoi(m[1]);
      v.keys_per_block = std::stoi(m[2]);
      v.max_k = std::stoi(m[3]);
      const bool known_tile = std::any_of(std::begin(kTiles), std::end(kTiles), [&](const Tile& t) {
        return t.queries == v.queries_per_block && t.keys == v.keys_per_block;
      });
      const bool known_max_k = std::find(std::begin(kMaxKs), std::end(kMaxKs), v.max_k) != std::end(kMaxKs);
      if (!known_tile || !known_max_k) return std::nullopt;
    } else if (std::regex_match(name, m, sm90)) {
      v.family = AttentionFamily::Sm90F16x3;
      v.max_k = std::stoi(m[1]);
      v.keys_per_block = std::stoi(m[2]);
      v.s_chunk = std::stoi(m[3]);
      v.pv_chunk = std::stoi(m[4]);
      const bool known_dim =
          std::find(std::begin(kSm90HeadDims), std::end(kSm90HeadDims), v.max_k) != std::end(kSm90HeadDims);
      const bool known_pv =
          std::find(std::begin(kSm90PvChunks), std::end(kSm90PvChunks), v.pv_chunk) != std::end(kSm90PvChunks);
      if (!known_dim || v.keys_per_block != sm90_keys_per_tile(v.max_k) ||
          !(v.s_chunk == kSm90SChunk || v.s_chunk == v.max_k) || !known_pv || v.pv_chunk > v.keys_per_block)
        return std::nullopt;
    } else {
      return std::nullopt;
    }
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (v.name() != name) return std::nullopt;
  return v;
}

AttentionProblemDesc attention_problem_from_json(const nlohmann::json& a) {
  AttentionProblemDesc p;
  p.batch = need_int(a, "batch", "payload");
  p.heads = need_int(a, "heads", "payload");
  p.seq_q = need_int(a, "seq_q", "payload");
  p.seq_k = need_int(a, "seq_k", "payload");
  p.head_dim = need_int(a, "head_dim", "payload");
  p.head_dim_v = need_int(a, "head_dim_v", "payload");
  p.element = a.value("element", std::string("float32"));
  p.causal = a.value("causal", false);
  const auto mask = a.value("mask", nlohmann::json());
  if (mask.is_object()) p.mask_kind = mask.value("kind", std::string("?"));
  p.q = operand_from_json(a.value("q", nlohmann::json()), "q");
  p.k = operand_from_json(a.value("k", nlohmann::json()), "k");
  p.v = operand_from_json(a.value("v", nlohmann::json()), "v");
  p.o = operand_from_json(a.value("o", nlohmann::json()), "o");
  return p;
}

std::optional<std::string> attention_problem_unsupported_reason(const AttentionProblemDesc& p) {
  if (p.element != "float32")
    return fmt::format("attention variants exist for float32 only (3xTF32 and f16x3, fp32-faithful), not {}", p.element);
  if (!p.mask_kind.empty() && !p.causal)
    return fmt::format("a '{}' mask that is not causal: the kernel implements no mask or the causal one",
                       p.mask_kind);
  for (const auto& [role, o] : {std::pair<const char*, const AttentionOperandDesc&>{"q", p.q},
                                {"k", p.k}, {"v", p.v}, {"o", p.o}}) {
    if (o.dim != 1) return fmt::format("{} has dim stride {}; the kernel reads contiguous head vectors", role, o.dim);
  }
  if (p.head_dim % kAlignmentElements)
    return fmt::format("head_dim {} is not a multiple of {} (16-byte vector loads of q and k)", p.head_dim,
                       kAlignmentElements);
  for (const auto& [role, o] : {std::pair<const char*, const AttentionOperandDesc&>{"q", p.q}, {"k", p.k}}) {
    if (o.offset % kAlignmentElements || o.seq % kAlignmentElements ||
        (p.heads > 1 && o.head % kAlignmentElements) || (p.batch > 1 && o.batch % kAlignmentElements))
      return fmt::format("{} offset/strides ({}, {}, {}, {}) are not multiples of {} elements (16-byte loads)", role,
                         o.offset, o.batch, o.head, o.seq, kAlignmentElements);
  }
  return std::nullopt;
}

std::optional<std::string> attention_illegal_reason(const AttentionVariant& v, const AttentionProblemDesc& p) {
  const int64_t widest = std::max(p.head_dim, p.head_dim_v);
  if (is_sm90(v)) {
    if (widest > v.max_k) return fmt::format("head dim {} exceeds the variant's head dim {}", widest, v.max_k);
    // V is read in 16-byte chunks too (the sm80 kernel's V alignment is its own check).
    if (p.head_dim_v % kAlignmentElements)
      return fmt::format("head_dim_v {} is not a multiple of {} (16-byte loads of v)", p.head_dim_v,
                         kAlignmentElements);
    const AttentionOperandDesc& o = p.v;
    if (o.offset % kAlignmentElements || o.seq % kAlignmentElements ||
        (p.heads > 1 && o.head % kAlignmentElements) || (p.batch > 1 && o.batch % kAlignmentElements))
      return fmt::format("v offset/strides ({}, {}, {}, {}) are not multiples of {} elements (16-byte loads)",
                         o.offset, o.batch, o.head, o.seq, kAlignmentElements);
    return std::nullopt;
  }
  if (widest > v.max_k) return fmt::format("head dim {} exceeds kMaxK {}", widest, v.max_k);
  if (p.o.head != p.head_dim_v || p.o.batch != p.seq_q * p.o.seq)
    return fmt::format(
        "output strides (batch {}, head {}, seq {}) are not the merged-heads layout the sm80 kernel writes "
        "(head = head_dim_v = {}, batch = seq_q * seq)",
        p.o.batch, p.o.head, p.o.seq, p.head_dim_v);
  if (!single_value_iteration(v) && p.o.seq != p.head_dim_v * p.heads)
    return fmt::format(
        "kMaxK {} > kKeysPerBlock {} accumulates through the output with row stride head_dim_v*heads = {}, but the "
        "output's seq stride is {}",
        v.max_k, v.keys_per_block, p.head_dim_v * p.heads, p.o.seq);
  return std::nullopt;
}

AttentionEnumeration enumerate_attention_variants(const AttentionProblemDesc& p, double tolerance, VariantSet set,
                                                  const std::string& target_arch) {
  AttentionEnumeration out;
  const ToleranceClass cls = tolerance_class(tolerance);
  if (!math_admitted(MathMode::TF32x3, cls) && !math_admitted(MathMode::F16x3, cls)) {
    out.reason = fmt::format("tolerance {} admits no attention math mode", tolerance);
    return out;
  }
  if (auto why = attention_problem_unsupported_reason(p)) {
    out.reason = *why;
    return out;
  }
  if (sm90_target(target_arch) && math_admitted(MathMode::F16x3, cls)) {
    // The smallest compiled head dim that holds the problem's (wider ones only pad).
    const int64_t widest = std::max(p.head_dim, p.head_dim_v);
    const int* dim = std::find_if(std::begin(kSm90HeadDims), std::end(kSm90HeadDims),
                                  [&](int d) { return d >= widest; });
    if (dim == std::end(kSm90HeadDims)) {
      const int widest_dim = kSm90HeadDims[std::size(kSm90HeadDims) - 1];
      AttentionVariant widest_variant{0, sm90_keys_per_tile(widest_dim), widest_dim, AttentionFamily::Sm90F16x3,
                                      kSm90SChunk, sm90_keys_per_tile(widest_dim)};
      out.skipped.push_back({widest_variant.name(), *attention_illegal_reason(widest_variant, p)});
    } else {
      // One group per S chunk: the whole head dim, then 32 (one group where they coincide).
      std::vector<int> s_chunks{*dim};
      if (*dim != kSm90SChunk) s_chunks.push_back(kSm90SChunk);
      for (int s_chunk : s_chunks) {
        bool have_one = false;
        const int keys = sm90_keys_per_tile(*dim);
        for (int pv_chunk : kSm90PvChunks) {
          if (pv_chunk > keys) continue;
          AttentionVariant v{0, keys, *dim, AttentionFamily::Sm90F16x3, s_chunk, pv_chunk};
          offer_variant(out, v, attention_illegal_reason(v, p), set, have_one);
        }
      }
    }
  }
  // The sm80 kernel: everywhere else, on sm90 where no f16x3 variant fits, and in "all".
  const bool sm80_too = out.variants.empty() || set == VariantSet::All;
  if (sm80_too && math_admitted(MathMode::TF32x3, cls)) {
    for (const Tile& t : kTiles) {
      bool have_one = false;  // default set: the smallest legal kMaxK per tile
      for (int max_k : kMaxKs) {
        AttentionVariant v{t.queries, t.keys, max_k};
        offer_variant(out, v, attention_illegal_reason(v, p), set, have_one);
      }
    }
  }
  if (out.variants.empty())
    out.reason = fmt::format("no attention variant fits head dim {} (first reason: {})",
                             std::max(p.head_dim, p.head_dim_v), first_skip_reason(out.skipped));
  return out;
}

std::string emit_attention_source(const AttentionVariant& v) {
  if (is_sm90(v))
    return thin_source("src/realize/attention_realizer.cpp", "attention_sm90.cuh", kSm90Source,
                       {{"name", v.name()},
                        {"head_dim", std::to_string(v.max_k)},
                        {"keys", std::to_string(v.keys_per_block)},
                        {"s_chunk", std::to_string(v.s_chunk)},
                        {"pv_chunk", std::to_string(v.pv_chunk)}},
                       "the template");
  return thin_source("src/realize/attention_realizer.cpp", "attention_sm80.cuh", kSource,
                     {{"name", v.name()},
                      {"queries", std::to_string(v.queries_per_block)},
                      {"keys", std::to_string(v.keys_per_block)},
                      {"max_k", std::to_string(v.max_k)}},
                     "the template and CUTLASS example 41");
}

const PatternRealizer& attention_realizer() {
  static const AttentionRealizer realizer;
  return realizer;
}

}  // namespace fact

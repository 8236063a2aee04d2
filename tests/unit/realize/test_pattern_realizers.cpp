// The layernorm and attention realizers: procedural names (round trip, refusals),
// legality reasons, enumeration per payload, golden generated sources, the
// rule -> realizer table, and run_realize dispatching these rules (fake nvcc and
// worker) instead of falling back with "no realizer".
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "fact/build.hpp"
#include "fact/pattern_realizer.hpp"
#include "fact/realize.hpp"
#include "realize_test_util.hpp"

namespace fact {
namespace {

using nlohmann::json;

json layernorm_payload(int64_t cols, bool residual, bool sum, int64_t row_stride = -1) {
  if (row_stride < 0) row_stride = cols;
  json p = {{"rows", 1024}, {"cols", cols}, {"eps", 1e-5}, {"element", "float32"}, {"weight", "w"}, {"bias", "b"},
            {"y", {{"tensor", "y"}, {"row_stride", cols}}}};
  if (residual) {
    p["x"] = nullptr;
    p["residual"] = {{"node", "add"},
                     {"a", {{"tensor", "a"}, {"row_stride", row_stride}}},
                     {"b", {{"tensor", "b"}, {"row_stride", cols}}},
                     {"sum", sum ? json{{"tensor", "add"}, {"row_stride", cols}} : json(nullptr)}};
  } else {
    p["x"] = {{"tensor", "x"}, {"row_stride", row_stride}};
    p["residual"] = nullptr;
  }
  return p;
}

// minGPT's attention (B, H, T, d) = (2, 4, 16, 8) on a packed qkv [B, T, 3C] tensor.
json attention_payload(int64_t head_dim = 8, int64_t heads = 4, int64_t seq = 16) {
  const int64_t c = heads * head_dim;
  auto operand = [&](const char* tensor, int64_t offset, int64_t batch, int64_t seq_stride) {
    return json{{"tensor", tensor},
                {"offset", offset},
                {"strides", {{"batch", batch}, {"head", head_dim}, {"seq", seq_stride}, {"dim", 1}}}};
  };
  return {{"form", "explicit"}, {"batch", 2}, {"heads", heads}, {"seq_q", seq}, {"seq_k", seq},
          {"head_dim", head_dim}, {"head_dim_v", head_dim}, {"scale", 0.35}, {"causal", true},
          {"mask", {{"kind", "masked_fill"}, {"buffer", "bias"}, {"rows", {0, seq}}, {"cols", {0, seq}},
                    {"keep", "nonzero"}, {"fill", "-inf"}, {"must_verify", "..."}}},
          {"dropout", nullptr},
          {"q", operand("qkv", 0, seq * 3 * c, 3 * c)},
          {"k", operand("qkv", c, seq * 3 * c, 3 * c)},
          {"v", operand("qkv", 2 * c, seq * 3 * c, 3 * c)},
          {"o", operand("out", 0, seq * c, c)},
          {"element", "float32"}};
}

std::vector<std::string> names_of(const RealizerEnumeration& e) {
  std::vector<std::string> out;
  for (const auto& c : e.candidates) out.push_back(c.name);
  return out;
}

std::string skipped_reason(const RealizerEnumeration& e, const std::string& name) {
  for (const auto& s : e.skipped)
    if (s.name == name) return s.reason;
  return "";
}

TEST(PatternRealizers, TableDispatchesByRuleName) {
  ASSERT_NE(find_pattern_realizer("layernorm"), nullptr);
  ASSERT_NE(find_pattern_realizer("attention"), nullptr);
  EXPECT_STREQ(find_pattern_realizer("layernorm")->rule(), "layernorm");
  EXPECT_STREQ(find_pattern_realizer("attention")->rule(), "attention");
  EXPECT_EQ(find_pattern_realizer("gemm"), nullptr) << "GEMMs keep their own path";
  EXPECT_EQ(find_pattern_realizer("layernorm_x"), nullptr) << "no substring matching";
  EXPECT_EQ(find_pattern_realizer("rmsnorm"), nullptr);
}

TEST(LayerNormVariants, NamesRoundTripAndRefuseMalformedNames) {
  LayerNormVariant v;
  v.cols = 768, v.warps_per_row = 4, v.vec = 4, v.residual = LayerNormResidual::ResidualWritesSum;
  EXPECT_EQ(v.name(), "layernorm_f32_c768_w4_v4_res_sum");
  for (const char* name : {"layernorm_f32_c768_w4_v4_res_sum", "layernorm_f32_c32_w1_v1_plain",
                           "layernorm_f32_c1000_w8_v2_res"}) {
    auto parsed = parse_layernorm_variant_name(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(parsed->name(), name);
  }
  for (const char* name : {"layernorm_f32_c768_w3_v4_plain", "layernorm_f32_c768_w4_v3_plain",
                           "layernorm_bf16_c768_w4_v4_plain", "layernorm_f32_c768_w4_v4", "layernorm_f32_c0768_w4_v4_res",
                           "gemm_sm80_f32_f32_128x128x8_c1x1_simt_dp_s3_tn_none"})
    EXPECT_FALSE(parse_layernorm_variant_name(name).has_value()) << name;
}

TEST(LayerNormVariants, EnumerationPicksTheWidestLegalVectorPerWarpCount) {
  const PatternRealizer& r = *find_pattern_realizer("layernorm");
  json pattern = {{"rule", "layernorm"}, {"layernorm", layernorm_payload(768, true, true)}};
  auto e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"layernorm_f32_c768_w1_v4_res_sum", "layernorm_f32_c768_w2_v4_res_sum",
                                                   "layernorm_f32_c768_w4_v4_res_sum", "layernorm_f32_c768_w8_v4_res_sum"}));
  for (const auto& c : e.candidates) {
    EXPECT_EQ(c.math, "f32");
    EXPECT_NE(std::find(c.flags.begin(), c.flags.end(), "-DNDEBUG"), c.flags.end());
  }
  auto all = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::All);
  EXPECT_EQ(all.candidates.size(), 12u);

  // A row stride that is not a multiple of 4 rules out float4 and float2 loads.
  pattern["layernorm"] = layernorm_payload(768, false, false, 771);
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e).front(), "layernorm_f32_c768_w1_v1_plain");
  EXPECT_NE(skipped_reason(e, "layernorm_f32_c768_w1_v4_plain").find("row stride 771 is not a multiple of the vector width 4"),
            std::string::npos);

  // 32 columns: more than one warp would idle; one warp is too many registers at 16384.
  pattern["layernorm"] = layernorm_payload(32, false, false);
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), std::vector<std::string>{"layernorm_f32_c32_w1_v4_plain"});
  EXPECT_NE(skipped_reason(e, "layernorm_f32_c32_w8_v4_plain").find("idle"), std::string::npos);
  pattern["layernorm"] = layernorm_payload(16384, false, false);
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_NE(skipped_reason(e, "layernorm_f32_c16384_w1_v4_plain").find("exceed the 64-register row fragment"),
            std::string::npos);
  EXPECT_EQ(names_of(e), std::vector<std::string>{"layernorm_f32_c16384_w8_v4_plain"});

  pattern["layernorm"] = layernorm_payload(768, false, false);
  pattern["layernorm"]["element"] = "bfloat16";
  e = r.enumerate(pattern, 1e-2, "sm90a", VariantSet::Default);
  EXPECT_TRUE(e.candidates.empty());
  EXPECT_NE(e.reason.find("float32 only"), std::string::npos) << e.reason;

  pattern["layernorm"].erase("rows");
  EXPECT_THROW(r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default), std::runtime_error);
}

TEST(LayerNormVariants, WarmPathRebuildsOnlyLegalNamedCandidates) {
  const PatternRealizer& r = *find_pattern_realizer("layernorm");
  json pattern = {{"rule", "layernorm"}, {"layernorm", layernorm_payload(768, true, false)}};
  auto c = r.candidate_named(pattern, "layernorm_f32_c768_w2_v4_res", 1e-4, "sm90a");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->source, emit_layernorm_source(*parse_layernorm_variant_name("layernorm_f32_c768_w2_v4_res"), "sm90a"));
  EXPECT_EQ(c->flags, layernorm_nvcc_flags("sm90a"));
  EXPECT_FALSE(r.candidate_named(pattern, "layernorm_f32_c768_w2_v4_res_sum", 1e-4, "sm90a")) << "residual mode";
  EXPECT_FALSE(r.candidate_named(pattern, "layernorm_f32_c512_w2_v4_res", 1e-4, "sm90a")) << "row length";
  EXPECT_FALSE(r.candidate_named(pattern, "attention_sm80_tf32x3_f32_64x64_maxk64", 1e-4, "sm90a"));
}

TEST(AttentionVariants, NamesRoundTripAndRefuseUnknownTiles) {
  AttentionVariant v{32, 128, 128};
  EXPECT_EQ(v.name(), "attention_sm80_tf32x3_f32_32x128_maxk128");
  for (const char* name : {"attention_sm80_tf32x3_f32_32x128_maxk128", "attention_sm80_tf32x3_f32_64x64_maxk65536",
                           "attention_sm80_tf32x3_f32_64x128_maxk64"})
    EXPECT_EQ(parse_attention_variant_name(name)->name(), name);
  for (const char* name : {"attention_sm80_tf32x3_f32_128x128_maxk128", "attention_sm80_tf32x3_f32_64x64_maxk96",
                           "attention_sm80_bf16_f32_64x64_maxk64", "attention_sm80_tf32x3_f32_64x64"})
    EXPECT_FALSE(parse_attention_variant_name(name).has_value()) << name;

  AttentionVariant h{0, 64, 96, AttentionFamily::Sm90F16x3, 96, 64};
  EXPECT_EQ(h.name(), "attention_sm90_f16x3_f32_d96_k64_s96_pv64");
  for (const char* name : {"attention_sm90_f16x3_f32_d96_k64_s96_pv64", "attention_sm90_f16x3_f32_d96_k64_s32_pv32",
                           "attention_sm90_f16x3_f32_d32_k64_s32_pv64", "attention_sm90_f16x3_f32_d64_k64_s64_pv32",
                           "attention_sm90_f16x3_f32_d128_k32_s128_pv32"}) {
    auto parsed = parse_attention_variant_name(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(parsed->family, AttentionFamily::Sm90F16x3);
    EXPECT_EQ(parsed->name(), name);
  }
  // Head dim 128 with 64-key tiles (shared memory), a PV chunk past the key tile, other key
  // tiles, an S chunk neither 32 nor the head dim, an unknown PV chunk, a non-canonical spelling.
  for (const char* name : {"attention_sm90_f16x3_f32_d128_k64_s32_pv64", "attention_sm90_f16x3_f32_d128_k32_s32_pv64",
                           "attention_sm90_f16x3_f32_d96_k32_s96_pv32", "attention_sm90_f16x3_f32_d96_k128_s32_pv64",
                           "attention_sm90_f16x3_f32_d96_k64_s64_pv64", "attention_sm90_f16x3_f32_d96_k64_s32_pv16",
                           "attention_sm90_f16x3_f32_d096_k64_s32_pv64", "attention_sm90_bf16x3_f32_d96_k64_s32_pv64"})
    EXPECT_FALSE(parse_attention_variant_name(name).has_value()) << name;
}

TEST(AttentionVariants, EnumerationAndIllegalReasons) {
  const PatternRealizer& r = *find_pattern_realizer("attention");
  json pattern = {{"rule", "attention"}, {"attention", attention_payload(8)}};
  // sm90a: the f16x3 kernel at the smallest compiled head dim (32; S chunk = head dim).
  auto e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), std::vector<std::string>{"attention_sm90_f16x3_f32_d32_k64_s32_pv64"});
  ASSERT_EQ(e.candidates.size(), 1u);
  EXPECT_EQ(e.candidates[0].math, "f16x3");
  EXPECT_NE(std::find(e.candidates[0].flags.begin(), e.candidates[0].flags.end(),
                      "-gencode=arch=compute_90a,code=sm_90a"),
            e.candidates[0].flags.end());
  // "all" adds the other PV chunk and the sm80 family.
  EXPECT_EQ(r.enumerate(pattern, 1e-4, "sm90a", VariantSet::All).candidates.size(), 2u + 9u);
  // Elsewhere: the sm80 kernel only.
  e = r.enumerate(pattern, 1e-4, "sm80", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"attention_sm80_tf32x3_f32_32x128_maxk64",
                                                   "attention_sm80_tf32x3_f32_64x64_maxk64",
                                                   "attention_sm80_tf32x3_f32_64x128_maxk64"}));
  for (const auto& c : e.candidates) {
    EXPECT_EQ(c.math, "tf32x3");
    EXPECT_NE(std::find(c.flags.begin(), c.flags.end(), "-gencode=arch=compute_80,code=sm_80"), c.flags.end());
  }
  EXPECT_FALSE(r.candidate_named(pattern, "attention_sm90_f16x3_f32_d32_k64_s32_pv64", 1e-4, "sm80"))
      << "an sm90a kernel offered to an sm80 target";
  EXPECT_TRUE(r.candidate_named(pattern, "attention_sm90_f16x3_f32_d96_k64_s32_pv64", 1e-4, "sm90a"))
      << "a wider compiled head dim pads";

  // minGPT's head dim 96: one variant per S chunk (96, 32) in the default set.
  pattern["attention"] = attention_payload(96, 8, 512);
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"attention_sm90_f16x3_f32_d96_k64_s96_pv64",
                                                   "attention_sm90_f16x3_f32_d96_k64_s32_pv64"}));
  // sm80: kMaxK 64 is too small; 64x64 with kMaxK 128 iterates over the value tile.
  e = r.enumerate(pattern, 1e-4, "sm80", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"attention_sm80_tf32x3_f32_32x128_maxk128",
                                                   "attention_sm80_tf32x3_f32_64x64_maxk128",
                                                   "attention_sm80_tf32x3_f32_64x128_maxk128"}));
  EXPECT_EQ(skipped_reason(e, "attention_sm80_tf32x3_f32_64x64_maxk64"), "head dim 96 exceeds kMaxK 64");
  // Head dim 128: 32-key tiles (PV chunk 32 only).
  pattern["attention"] = attention_payload(128, 8, 512);
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"attention_sm90_f16x3_f32_d128_k32_s128_pv32",
                                                   "attention_sm90_f16x3_f32_d128_k32_s32_pv32"}));
  // Head dim 160: no f16x3 variant holds it (the reason is listed), the sm80 kernel is offered.
  pattern["attention"] = attention_payload(160, 4, 512);
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"attention_sm80_tf32x3_f32_32x128_maxk65536",
                                                   "attention_sm80_tf32x3_f32_64x64_maxk65536",
                                                   "attention_sm80_tf32x3_f32_64x128_maxk65536"}));
  EXPECT_EQ(skipped_reason(e, "attention_sm90_f16x3_f32_d128_k32_s32_pv32"),
            "head dim 160 exceeds the variant's head dim 128");
  // V read in 16-byte chunks: a value head dim of 6 refuses the f16x3 kernel.
  pattern["attention"] = attention_payload(8);
  pattern["attention"]["head_dim_v"] = 6;
  pattern["attention"]["o"]["strides"] = {{"batch", 16 * 4 * 6}, {"head", 6}, {"seq", 4 * 6}, {"dim", 1}};
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(skipped_reason(e, "attention_sm90_f16x3_f32_d32_k64_s32_pv64"),
            "head_dim_v 6 is not a multiple of 4 (16-byte loads of v)");
  EXPECT_EQ(e.candidates.front().math, "tf32x3");

  pattern["attention"] = attention_payload(96, 8, 512);
  // A multi-iteration variant accumulates through O with row stride dv*heads: a padded output row refuses it.
  pattern["attention"]["o"]["strides"]["seq"] = 800;
  pattern["attention"]["o"]["strides"]["batch"] = 800 * 512;
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::All);
  EXPECT_NE(skipped_reason(e, "attention_sm80_tf32x3_f32_64x64_maxk128").find("row stride head_dim_v*heads = 768"),
            std::string::npos);
  EXPECT_EQ(skipped_reason(e, "attention_sm80_tf32x3_f32_32x128_maxk128"), "") << "single value iteration";

  // Output not in the merged-heads layout ([B, H, T, d] contiguous, as a bare SDPA returns
  // it): the f16x3 kernel writes any strides; the sm80 kernel cannot, and says so.
  pattern["attention"]["o"]["strides"] = {{"batch", 8 * 512 * 96}, {"head", 512 * 96}, {"seq", 96}, {"dim", 1}};
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"attention_sm90_f16x3_f32_d96_k64_s96_pv64",
                                                   "attention_sm90_f16x3_f32_d96_k64_s32_pv64"}));
  e = r.enumerate(pattern, 1e-4, "sm80", VariantSet::Default);
  EXPECT_TRUE(e.candidates.empty());
  EXPECT_NE(skipped_reason(e, "attention_sm80_tf32x3_f32_32x128_maxk128").find("merged-heads layout the sm80 kernel"),
            std::string::npos)
      << e.reason;

  pattern["attention"] = attention_payload(8);
  pattern["attention"]["k"]["offset"] = 33;
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_NE(e.reason.find("not multiples of 4 elements"), std::string::npos) << e.reason;

  pattern["attention"] = attention_payload(6);
  e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_NE(e.reason.find("head_dim 6 is not a multiple of 4"), std::string::npos) << e.reason;

  pattern["attention"] = attention_payload(8);
  pattern["attention"]["causal"] = false;
  EXPECT_NE(r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default).reason.find("not causal"), std::string::npos);
  pattern["attention"]["mask"] = nullptr;
  EXPECT_EQ(r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default).candidates.size(), 1u) << "no mask at all";

  pattern["attention"]["element"] = "bfloat16";
  EXPECT_NE(r.enumerate(pattern, 1e-2, "sm90a", VariantSet::Default).reason.find("float32 only"), std::string::npos);
  pattern["attention"] = attention_payload(8);
  EXPECT_NE(r.enumerate(pattern, 1e-4, "sm70", VariantSet::Default).reason.find("no attention kernel targets"),
            std::string::npos);
  pattern["attention"].erase("q");
  EXPECT_THROW(r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default), std::runtime_error);
}

// sm90 LayerNorm libraries compile the image writer of every pre-kernel format (and
// compute_90a); other targets, and rows too long for the writer, none.
TEST(LayerNormVariants, Sm90LibrariesWriteEveryPreKernelImageFormat) {
  const auto v = *parse_layernorm_variant_name("layernorm_f32_c768_w1_v4_plain");
  EXPECT_EQ(layernorm_image_formats(v), split_image_formats());
  ASSERT_EQ(split_image_formats().size(), 4u);  // f16x3, bf16x6, bf16x3, bf16 pre kernels
  const std::string sm90 = emit_layernorm_source(v, "sm90a");
  EXPECT_NE(sm90.find("#include \"layernorm_image.cuh\""), std::string::npos);
  for (const ImageFormatSpec& f : split_image_format_specs())
    EXPECT_NE(sm90.find(fmt::format("ImageFormat<fact::split_gemm::{}, {}, {}, {}>",
                                    f.f16_scaled ? "PartsFp16Scaled" : "PartsBf16", f.parts, f.rows, f.tile_k)),
              std::string::npos)
        << f.name() << "\n"
        << sm90;
  EXPECT_NE(std::find(layernorm_nvcc_flags("sm90a").begin(), layernorm_nvcc_flags("sm90a").end(),
                      "-gencode=arch=compute_90a,code=sm_90a"),
            layernorm_nvcc_flags("sm90a").end());
  const std::string sm80 = emit_layernorm_source(v, "sm80");
  EXPECT_NE(sm80.find("using FactImages = fact::layernorm::NoImages;"), std::string::npos) << sm80;
  EXPECT_EQ(sm80.find("layernorm_image.cuh"), std::string::npos);
  const auto wide = *parse_layernorm_variant_name("layernorm_f32_c4096_w4_v4_plain");
  EXPECT_TRUE(layernorm_image_formats(wide).empty()) << "4096 columns exceed the writer's registers";
  EXPECT_NE(emit_layernorm_source(wide, "sm90a").find("NoImages"), std::string::npos);
}

TEST(RmsNormVariants, NamesCarryTheNormAndPayloadsPickIt) {
  auto rms = parse_layernorm_variant_name("rmsnorm_f32_c1024_w4_v4_plain");
  ASSERT_TRUE(rms.has_value());
  EXPECT_EQ(rms->norm, NormKind::Rms);
  EXPECT_EQ(rms->name(), "rmsnorm_f32_c1024_w4_v4_plain");
  EXPECT_EQ(parse_layernorm_variant_name("layernorm_f32_c1024_w4_v4_plain")->norm, NormKind::Layer);
  for (const char* bad : {"rmsnorm_f32_c1024_w4_v4", "rms_f32_c1024_w4_v4_plain", "rmsnorm_bf16_c1024_w4_v4_plain"})
    EXPECT_FALSE(parse_layernorm_variant_name(bad).has_value()) << bad;

  const PatternRealizer& r = *find_pattern_realizer("layernorm");
  json payload = layernorm_payload(1024, true, true);
  payload["norm"] = "rms";
  payload["bias"] = nullptr;
  json pattern = {{"rule", "layernorm"}, {"layernorm", payload}};
  RealizerEnumeration e = r.enumerate(pattern, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(names_of(e), (std::vector<std::string>{"rmsnorm_f32_c1024_w1_v4_res_sum", "rmsnorm_f32_c1024_w2_v4_res_sum",
                                                   "rmsnorm_f32_c1024_w4_v4_res_sum", "rmsnorm_f32_c1024_w8_v4_res_sum"}));
  for (const auto& c : e.candidates) {
    EXPECT_NE(c.source.find("fact::layernorm::kRmsNorm"), std::string::npos) << c.name;
    EXPECT_NE(c.source.find("layernorm_image.cuh"), std::string::npos) << "the hand-off writer: " << c.name;
  }
  // The registry's warm path never takes a LayerNorm variant for an RMSNorm pattern, nor back.
  EXPECT_TRUE(r.candidate_named(pattern, "rmsnorm_f32_c1024_w2_v4_res_sum", 1e-4, "sm90a"));
  EXPECT_FALSE(r.candidate_named(pattern, "layernorm_f32_c1024_w2_v4_res_sum", 1e-4, "sm90a"));
  EXPECT_EQ(*layernorm_illegal_reason(*parse_layernorm_variant_name("layernorm_f32_c1024_w2_v4_res_sum"),
                                      layernorm_problem_from_json(payload)),
            "a layernorm variant does not compute the pattern's rmsnorm");
  json layer = pattern;
  layer["layernorm"]["norm"] = "layer";
  EXPECT_FALSE(r.candidate_named(layer, "rmsnorm_f32_c1024_w2_v4_res_sum", 1e-4, "sm90a"));
  layer["layernorm"].erase("norm");  // plans written before RMSNorm: LayerNorm
  EXPECT_EQ(layernorm_problem_from_json(layer["layernorm"]).norm, NormKind::Layer);

  payload["bias"] = "b";
  EXPECT_THROW(layernorm_problem_from_json(payload), std::runtime_error);
  payload["bias"] = nullptr;
  payload["norm"] = "group";
  EXPECT_THROW(layernorm_problem_from_json(payload), std::runtime_error);
}

TEST(PatternRealizers, GoldenSources) {
  const std::string ln = "layernorm_f32_c768_w4_v4_res_sum";
  check_golden(ln, emit_layernorm_source(*parse_layernorm_variant_name(ln), "sm90a"));
  const std::string rms = "rmsnorm_f32_c1024_w4_v4_plain";
  check_golden(rms, emit_layernorm_source(*parse_layernorm_variant_name(rms), "sm90a"));
  for (const std::string att : {"attention_sm80_tf32x3_f32_32x128_maxk128", "attention_sm90_f16x3_f32_d96_k64_s96_pv64"})
    check_golden(att, emit_attention_source(*parse_attention_variant_name(att)));
}

// ---- run_realize dispatch (fake nvcc + fake worker, as test_realize.cpp) ------

json plan_pattern(const std::string& id, const std::string& rule, const json& payload) {
  return {{"id", id}, {"rule", rule}, {"root", rule}, {"nodes", {rule}}, {"inputs", json::array()},
          {"outputs", {rule}}, {"dtype", "float32"}, {"arch", "sm90a"}, {"priority", 0},
          {"problem_key", rule + ":" + id}, {"shape_class", rule}, {rule, payload}};
}

json realize_plan(TempDir& t, EnvGuard& env, const json& patterns, bool compile_only) {
  fake_realize_toolchain(t.path, env, R"([["_s32_", "wrong"], ["_w2_", "ok:0.5"]])", /*jobs=*/1);
  RealizeOptions o = write_fake_plan(t.path, patterns);
  o.compile_only = compile_only;
  EXPECT_EQ(run_realize(o), 0);
  std::ifstream in(o.output_path);
  return json::parse(in);
}

TEST(RealizeDispatch, LayerNormAndAttentionAreRealizedNotFallenBack) {
  TempDir t;
  EnvGuard env;
  json patterns = json::array({plan_pattern("p0", "layernorm", layernorm_payload(768, false, false)),
                               plan_pattern("p1", "attention", attention_payload(96, 8, 512)),
                               plan_pattern("p2", "rmsnorm", json::object())});
  json r = realize_plan(t, env, patterns, /*compile_only=*/false);
  const json& ln = r["patterns"][0];
  EXPECT_EQ(ln["status"], "realized") << ln.dump(2);
  EXPECT_EQ(ln["variant"], "layernorm_f32_c768_w2_v4_plain");  // the fake worker's fastest
  EXPECT_EQ(ln["math"], "f32");
  const json& att = r["patterns"][1];
  EXPECT_EQ(att["status"], "realized") << att.dump(2);
  EXPECT_EQ(att["variant"], "attention_sm90_f16x3_f32_d96_k64_s96_pv64");  // ties: the first in enumeration order
  EXPECT_EQ(att["math"], "f16x3");
  bool saw_wrong = false;
  for (const auto& c : att["candidates"]) saw_wrong |= c["name"] == "attention_sm90_f16x3_f32_d96_k64_s32_pv64" && c["status"] == "wrong";
  EXPECT_TRUE(saw_wrong) << att.dump(2);
  const json& other = r["patterns"][2];
  EXPECT_EQ(other["status"], "fallback");
  EXPECT_NE(other["reason"].get<std::string>().find("no realizer for rule 'rmsnorm'"), std::string::npos);
}

TEST(RealizeDispatch, WarmRunReverifiesOnlyTheRecordedWinner) {
  TempDir t;
  EnvGuard env;
  json patterns = json::array({plan_pattern("p0", "layernorm", layernorm_payload(768, false, false))});
  json cold = realize_plan(t, env, patterns, /*compile_only=*/false);
  ASSERT_EQ(cold["patterns"][0]["status"], "realized");
  EXPECT_FALSE(cold["patterns"][0]["from_registry"].get<bool>());
  json warm = realize_plan(t, env, patterns, /*compile_only=*/false);
  const json& p = warm["patterns"][0];
  EXPECT_EQ(p["status"], "realized");
  EXPECT_TRUE(p["from_registry"].get<bool>());
  EXPECT_EQ(p["variant"], cold["patterns"][0]["variant"]);
  int recorded = 0;
  for (const auto& c : p["candidates"])
    recorded += c["reason"].get<std::string>().rfind("recorded in the registry", 0) == 0;
  EXPECT_EQ(recorded, 3) << p.dump(2);  // the other three cold candidates, as the registry recorded them
}

// The default set's candidates all fail: the realizer's other variants (for attention on
// sm90, the sm80 family) are tried before the pattern falls back to PyTorch.
TEST(RealizeDispatch, ARulePatternWhoseDefaultCandidatesFailTriesTheOtherVariants) {
  for (const bool sm80_passes : {true, false}) {
    SCOPED_TRACE(sm80_passes ? "sm80 passes" : "nothing passes");
    TempDir t;
    EnvGuard env;
    fake_realize_toolchain(t.path, env, sm80_passes ? R"([["attention_sm90", "wrong"]])" : R"([["attention_", "wrong"]])",
                           /*jobs=*/1);
    RealizeOptions o = write_fake_plan(t.path, json::array({plan_pattern("p1", "attention", attention_payload(96, 8, 512))}));
    ASSERT_EQ(run_realize(o), 0);
    std::ifstream in(o.output_path);
    const json att = json::parse(in)["patterns"][0];
    int sm90_wrong = 0, sm80 = 0;
    for (const auto& c : att["candidates"]) {
      const std::string name = c["name"];
      sm90_wrong += name.rfind("attention_sm90_", 0) == 0 && c["status"] == "wrong";
      sm80 += name.rfind("attention_sm80_", 0) == 0;
    }
    EXPECT_EQ(sm90_wrong, 4) << "every sm90 variant tried (the default two, then the other two)\n" << att.dump(1);
    EXPECT_EQ(sm80, 9) << att.dump(1);
    if (sm80_passes) {
      EXPECT_EQ(att["status"], "realized") << att.dump(1);
      EXPECT_EQ(att["variant"].get<std::string>().rfind("attention_sm80_", 0), 0u) << att["variant"];
    } else {
      EXPECT_EQ(att["status"], "fallback") << att.dump(1);
    }
  }
}

TEST(RealizeDispatch, CompileOnlyCompilesTheRuleCandidates) {
  TempDir t;
  EnvGuard env;
  json patterns = json::array({plan_pattern("p0", "layernorm", layernorm_payload(768, true, true)),
                               plan_pattern("p1", "attention", attention_payload(8))});
  json r = realize_plan(t, env, patterns, /*compile_only=*/true);
  for (const auto& p : r["patterns"]) {
    EXPECT_EQ(p["status"], "fallback");
    EXPECT_NE(p["reason"].get<std::string>().find("compile-only run"), std::string::npos) << p["reason"];
    EXPECT_EQ(p["reason"].get<std::string>().find("no realizer"), std::string::npos);
    int compiled = 0;
    for (const auto& c : p["candidates"]) compiled += c["status"] == "compiled";
    EXPECT_GE(compiled, 1) << p.dump(2);
    EXPECT_EQ(compiled, int(p["candidates"].size())) << p.dump(2);
  }
  // Each compiled TU went through nvcc with the generated source.
  std::ifstream calls(t.path / "nvcc_calls");
  std::string line, all;
  while (std::getline(calls, line)) all += line + "\n";
  EXPECT_NE(all.find("layernorm_f32_c768_w1_v4_res_sum.cu"), std::string::npos) << all;
  EXPECT_NE(all.find("attention_sm90_f16x3_f32_d32_k64_s32_pv64.cu"), std::string::npos) << all;
}

TEST(RealizeDispatch, WithoutNvccTheRunStopsWithTheToolchainError) {
  // As for GEMMs: no toolchain, nothing can be attempted; run_realize returns 3
  // after logging what is missing (resolve_toolchain's reason), writing no
  // realized.json that would claim a realizer ran.
  TempDir t;
  EnvGuard env;
  json patterns = json::array({plan_pattern("p0", "layernorm", layernorm_payload(768, false, false))});
  realize_plan(t, env, patterns, /*compile_only=*/true);
  env.set("FACT_NVCC", (t.path / "no-nvcc").string());
  fs::remove(t.path / "realized.json");
  RealizeOptions o;
  o.plan_path = (t.path / "plan.json").string();
  o.output_path = (t.path / "realized.json").string();
  o.compile_only = true;
  EXPECT_EQ(run_realize(o), 3);
  EXPECT_FALSE(fs::exists(t.path / "realized.json"));
  std::string why;
  EXPECT_FALSE(resolve_toolchain(&why).has_value());
  EXPECT_NE(why.find("nvcc"), std::string::npos) << why;
}

TEST(RealizeDispatch, MalformedPayloadFallsBackWithItsReason) {
  TempDir t;
  EnvGuard env;
  json bad = layernorm_payload(768, false, false);
  bad.erase("cols");
  json r = realize_plan(t, env, json::array({plan_pattern("p0", "layernorm", bad)}), /*compile_only=*/true);
  EXPECT_EQ(r["patterns"][0]["status"], "fallback");
  EXPECT_NE(r["patterns"][0]["reason"].get<std::string>().find("lacks field 'cols'"), std::string::npos)
      << r["patterns"][0]["reason"];
}

}  // namespace
}  // namespace fact

// Variant names, parsing and enumeration (pure C++, no CUDA).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <tuple>

#include "fact/variant.hpp"

namespace fact {
namespace {

GemmProblemDesc square(OperandLayout la, OperandLayout lb, int64_t n = 4096, int64_t k = 0) {
  GemmProblemDesc p;
  p.m = p.n = n;
  p.k = k ? k : n;
  p.layout_a = la, p.layout_b = lb;
  p.ld_a = la == OperandLayout::Row ? p.k : p.m;  // densely packed
  p.ld_b = lb == OperandLayout::Col ? p.k : p.n;
  p.ld_d = n;
  return p;
}

std::set<MathMode> maths(const Enumeration& e) {
  std::set<MathMode> out;
  for (const auto& v : e.variants) out.insert(v.math);
  return out;
}

TEST(Variant, NameFollowsContractOrder) {
  GemmVariant v;
  v.arch = KernelArch::Sm90, v.math = MathMode::BF16x3, v.tile_m = 128, v.tile_n = 256, v.tile_k = 64;
  v.cluster_m = 2, v.cluster_n = 1, v.schedule = Schedule::Coop, v.scheduler = SchedulerKind::StreamK;
  v.layout_a = OperandLayout::Row, v.layout_b = OperandLayout::Col, v.epilogue = EpilogueKind::Bias;
  EXPECT_EQ(v.name(), "gemm_sm90_bf16x3_f32_128x256x64_c2x1_coop_streamk_sauto_tt_bias");
  v.scheduler = SchedulerKind::SplitK, v.splits = 16, v.stages = 4, v.layout_b = OperandLayout::Row;
  v.layout_a = OperandLayout::Col, v.epilogue = EpilogueKind::C;
  EXPECT_EQ(v.name(), "gemm_sm90_bf16x3_f32_128x256x64_c2x1_coop_splitk16_s4_nn_c");
}

TEST(Variant, LayoutLettersFollowContract) {
  EXPECT_EQ(layout_letter(OperandLayout::Row, false), 't');
  EXPECT_EQ(layout_letter(OperandLayout::Col, false), 'n');
  EXPECT_EQ(layout_letter(OperandLayout::Col, true), 't');
  EXPECT_EQ(layout_letter(OperandLayout::Row, true), 'n');
}

TEST(Variant, ParseRoundTripsEveryEnumeratedName) {
  for (double tol : {1e-4, 1e-2})
    for (auto la : {OperandLayout::Row, OperandLayout::Col})
      for (auto lb : {OperandLayout::Row, OperandLayout::Col}) {
        auto p = square(la, lb, 256, 524288);
        auto e = enumerate_gemm_variants(p, tol, "sm90a", VariantSet::All);
        ASSERT_FALSE(e.variants.empty());
        for (const auto& v : e.variants) {
          auto parsed = parse_variant_name(v.name());
          ASSERT_TRUE(parsed.has_value()) << v.name();
          EXPECT_EQ(parsed->name(), v.name());
          EXPECT_EQ(parsed->splits, v.splits);
        }
      }
}

TEST(Variant, ParseRejectsMalformedNames) {
  for (const char* bad : {"", "gemm", "gemm_sm90_bf16x3_f32_128x128x64_c1x1_coop_persistent_sauto_tt",
                          "gemm_sm91_bf16x3_f32_128x128x64_c1x1_coop_persistent_sauto_tt_none",
                          "gemm_sm90_bf16x3_f32_128x128_c1x1_coop_persistent_sauto_tt_none",
                          "gemm_sm90_bf16x3_f32_128x128x64_c1x1_coop_splitk1_sauto_tt_none",
                          "gemm_sm90_bf16x3_f32_0128x128x64_c1x1_coop_persistent_sauto_tt_none",
                          "gemm_sm90_bf16x3_f32_128x128x64_c1x1_coop_persistent_sauto_tx_none"})
    EXPECT_FALSE(parse_variant_name(bad).has_value()) << bad;
}

TEST(Variant, Fp32ClassNeverAdmitsSingleRoundingModes) {
  for (auto set : {VariantSet::Default, VariantSet::All})
    for (auto la : {OperandLayout::Row, OperandLayout::Col})
      for (auto lb : {OperandLayout::Row, OperandLayout::Col}) {
        auto e = enumerate_gemm_variants(square(la, lb), 1e-4, "sm90a", set);
        ASSERT_FALSE(e.variants.empty());
        for (const auto& v : e.variants) {
          EXPECT_NE(v.math, MathMode::TF32) << v.name();
          EXPECT_NE(v.math, MathMode::BF16) << v.name();
          EXPECT_NE(v.math, MathMode::F16) << v.name();
          EXPECT_NE(v.math, MathMode::BF16x3) << v.name();  // ~16 operand bits: 1e-2 class (NOTES.md)
        }
        const auto m = maths(e);
        EXPECT_TRUE(m.count(MathMode::F32));
        EXPECT_TRUE(m.count(MathMode::TF32x3));
        EXPECT_TRUE(m.count(MathMode::BF16x6));
      }
}

TEST(Variant, RelaxedClassAddsFastModes) {
  auto e = enumerate_gemm_variants(square(OperandLayout::Row, OperandLayout::Col), 1e-2, "sm90a", VariantSet::Default);
  const auto m = maths(e);
  EXPECT_TRUE(m.count(MathMode::TF32));
  EXPECT_TRUE(m.count(MathMode::BF16));
  EXPECT_TRUE(m.count(MathMode::F16));
  EXPECT_TRUE(m.count(MathMode::BF16x3));
}

TEST(Variant, MnMajorOperandExcludesSm90Tf32) {
  for (auto [la, lb] : {std::pair{OperandLayout::Row, OperandLayout::Row}, std::pair{OperandLayout::Col, OperandLayout::Col}}) {
    auto e = enumerate_gemm_variants(square(la, lb), 1e-2, "sm90a", VariantSet::All);
    for (const auto& v : e.variants)
      EXPECT_FALSE(v.arch == KernelArch::Sm90 && v.math == MathMode::TF32) << v.name();
    const bool skipped_with_reason = std::any_of(e.skipped.begin(), e.skipped.end(), [](const SkippedVariant& s) {
      return s.name.find("_tf32_") != std::string::npos && s.reason.find("K-major") != std::string::npos;
    });
    EXPECT_TRUE(skipped_with_reason);
    // The pre-pass modes keep any layout.
    EXPECT_TRUE(maths(e).count(MathMode::BF16));
  }
  auto tn = enumerate_gemm_variants(square(OperandLayout::Row, OperandLayout::Col), 1e-2, "sm90a", VariantSet::Default);
  EXPECT_TRUE(maths(tn).count(MathMode::TF32));
}

// Rows that are not 16-byte aligned rule out TMA and 16-byte copies: what is left are the
// kernels that read any fp32 element (the pre split kernel's pre-pass, sm80 SIMT), and
// every other variant is skipped with the extent that misaligns it.
TEST(Variant, MisalignedProblemKeepsTheAnyAlignmentKernels) {
  for (const bool misaligned_k : {true, false}) {
    auto p = square(OperandLayout::Row, OperandLayout::Col, 1024);
    if (misaligned_k) {
      p.k = 1021;
      p.ld_a = p.ld_b = 1021;
    } else {
      p.ld_d = 1026;  // only D's rows: the split kernels store elements (pairs), not by TMA
    }
    auto e = enumerate_gemm_variants(p, 1e-4, "sm90a", VariantSet::Default);
    std::set<std::string> kinds;
    for (const auto& v : e.variants) {
      const SplitKernel* kernel = split_kernel(v);
      kinds.insert(v.arch == KernelArch::Sm80 ? "sm80" : kernel ? token(kernel->schedule) : "sm90");
      if (v.arch == KernelArch::Sm80) EXPECT_EQ(v.math, MathMode::F32) << v.name();
    }
    if (misaligned_k) {
      EXPECT_EQ(kinds, (std::set<std::string>{"sm80", "pre"}));
    } else {
      EXPECT_TRUE(kinds.count("pre") && kinds.count("coop")) << "split kernels store D element-wise";
      EXPECT_FALSE(kinds.count("sm90")) << "CUTLASS sm90 stores D by TMA";
    }
    bool reason_names_extent = false;
    for (const auto& s : e.skipped)
      reason_names_extent |= s.reason.find(misaligned_k ? "k (A's rows) = 1021 is not a multiple of 4"
                                                        : "ld of D = 1026 is not a multiple of 4") != std::string::npos;
    EXPECT_TRUE(reason_names_extent);
  }
}

TEST(Variant, NonFloatOperandsHaveAReason) {
  auto p = square(OperandLayout::Row, OperandLayout::Col);
  p.element_a = p.element_b = "float16";
  auto e = enumerate_gemm_variants(p, 1e-2, "sm90a", VariantSet::Default);
  EXPECT_TRUE(e.variants.empty());
  EXPECT_NE(e.reason.find("float16"), std::string::npos) << e.reason;
}

TEST(Variant, UnknownArchHasAReason) {
  auto e = enumerate_gemm_variants(square(OperandLayout::Row, OperandLayout::Col), 1e-4, "gfx942", VariantSet::Default);
  EXPECT_TRUE(e.variants.empty());
  EXPECT_NE(e.reason.find("gfx942"), std::string::npos);
  auto a100 = enumerate_gemm_variants(square(OperandLayout::Row, OperandLayout::Col), 1e-4, "sm80", VariantSet::Default);
  ASSERT_FALSE(a100.variants.empty());
  for (const auto& v : a100.variants) EXPECT_EQ(v.arch, KernelArch::Sm80);
}

TEST(Variant, SmallMnLargeKAddsSplitScheduling) {
  auto p = square(OperandLayout::Row, OperandLayout::Row, 256, 524288);
  auto e = enumerate_gemm_variants(p, 1e-4, "sm90a", VariantSet::Default);
  bool streamk = false, splitk = false;
  for (const auto& v : e.variants) {
    streamk |= v.scheduler == SchedulerKind::StreamK;
    if (v.scheduler == SchedulerKind::SplitK) {
      splitk = true;
      EXPECT_GE(v.splits, 2);
    }
  }
  EXPECT_TRUE(streamk);
  EXPECT_TRUE(splitk);
  // Data-parallel tiles accumulate all of K serially: not offered by default here.
  for (const auto& v : e.variants)
    if (v.arch != KernelArch::Sm90Split)
      EXPECT_TRUE(v.scheduler == SchedulerKind::StreamK || v.scheduler == SchedulerKind::SplitK) << v.name();
  auto big = enumerate_gemm_variants(square(OperandLayout::Row, OperandLayout::Row), 1e-4, "sm90a", VariantSet::Default);
  for (const auto& v : big.variants) EXPECT_NE(v.scheduler, SchedulerKind::StreamK) << v.name();
}

TEST(Variant, SplitKNotOfferedForBatchedSm80) {
  auto p = square(OperandLayout::Row, OperandLayout::Row, 64, 65536);
  p.batch = 4;
  p.batch_stride_a = p.batch_stride_b = 64 * 65536;
  p.batch_stride_d = 64 * 64;
  auto e = enumerate_gemm_variants(p, 1e-4, "sm90a", VariantSet::Default);
  for (const auto& v : e.variants)
    EXPECT_FALSE(v.arch == KernelArch::Sm80 && v.scheduler == SchedulerKind::SplitK) << v.name();
}

TEST(Variant, AllSetIsASupersetOfDefault) {
  auto p = square(OperandLayout::Row, OperandLayout::Col);
  auto d = enumerate_gemm_variants(p, 1e-2, "sm90a", VariantSet::Default);
  auto a = enumerate_gemm_variants(p, 1e-2, "sm90a", VariantSet::All);
  std::set<std::string> all_names;
  for (const auto& v : a.variants) all_names.insert(v.name());
  EXPECT_GT(a.variants.size(), d.variants.size());
  for (const auto& v : d.variants) EXPECT_TRUE(all_names.count(v.name())) << v.name();
  // Cooperative needs tile M >= 128 and stream-K needs cooperative: never emitted otherwise.
  for (const auto& v : a.variants) {
    if (v.arch != KernelArch::Sm90) continue;
    if (v.schedule == Schedule::Coop) EXPECT_GE(v.tile_m, 128) << v.name();
    if (v.scheduler == SchedulerKind::StreamK) EXPECT_EQ(v.schedule, Schedule::Coop) << v.name();
  }
}

std::set<std::string> names(const Enumeration& e) {
  std::set<std::string> out;
  for (const auto& v : e.variants) out.insert(v.name());
  return out;
}

// The candidates of the v3 family (two consumer warpgroups on a part ring: schedules coop
// and pre), in enumeration order.
std::vector<std::string> split_v3_names(const Enumeration& e) {
  std::vector<std::string> out;
  for (const auto& v : e.variants)
    if (const SplitKernel* k = split_kernel(v); k && k->consumer_ring) out.push_back(v.name());
  return out;
}

// v3 (in-load split, schedule coop) and v3 pre (schedule pre); v2 (schedule ws) by default
// only for bf16x6 (it lost to coop / pre everywhere measured), every v2 in "all".
TEST(Variant, SplitV3KernelsOfferedBesideV2) {
  const auto p = square(OperandLayout::Row, OperandLayout::Col);
  const auto fp32 = enumerate_gemm_variants(p, 1e-4, "sm90a", VariantSet::Default);
  EXPECT_EQ(split_v3_names(fp32),
            (std::vector<std::string>{"gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s3_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_persistent_s6_tt_none"}));
  EXPECT_FALSE(names(fp32).count("gemm_sm90split_f16x3_f32_128x128x32_c1x1_ws_dp_s4_tt_none"));
  EXPECT_TRUE(names(fp32).count("gemm_sm90split_bf16x6_f32_128x128x32_c1x1_ws_dp_s4_tt_none"));
  EXPECT_LE(fp32.variants.size(), 14u) << "each default candidate is an nvcc translation unit";
  const auto fp32_all = enumerate_gemm_variants(p, 1e-4, "sm90a", VariantSet::All);
  EXPECT_TRUE(names(fp32_all).count("gemm_sm90split_f16x3_f32_128x128x32_c1x1_ws_dp_s4_tt_none"));
  EXPECT_EQ(split_v3_names(fp32_all),
            (std::vector<std::string>{"gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s3_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_hyb_persistent_s5_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_hyb_dp_s5_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_persistent_s6_tt_none",
                                      "gemm_sm90split_bf16x6_f32_128x128x32_c1x1_coop_dp_s3_tt_none",
                                      "gemm_sm90split_bf16x6_f32_128x128x32_c1x1_hyb_persistent_s3_tt_none",
                                      "gemm_sm90split_bf16x6_f32_128x128x32_c1x1_hyb_dp_s3_tt_none",
                                      "gemm_sm90split_bf16x6_f32_128x128x32_c1x1_pre_dp_s4_tt_none",
                                      "gemm_sm90split_bf16x6_f32_128x128x32_c1x1_pre_persistent_s4_tt_none"}));
  const auto relaxed = enumerate_gemm_variants(p, 1e-2, "sm90a", VariantSet::Default);
  EXPECT_EQ(split_v3_names(relaxed),
            (std::vector<std::string>{"gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s3_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_none",
                                      "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_persistent_s6_tt_none",
                                      "gemm_sm90split_bf16x3_f32_128x128x32_c1x1_coop_dp_s3_tt_none",
                                      "gemm_sm90split_bf16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_none",
                                      "gemm_sm90split_bf16x3_f32_128x128x32_c1x1_pre_persistent_s6_tt_none",
                                      "gemm_sm90split_bf16_f32_128x128x32_c1x1_coop_dp_s3_tt_none",
                                      "gemm_sm90split_bf16_f32_128x128x32_c1x1_pre_dp_s8_tt_none",
                                      "gemm_sm90split_bf16_f32_128x128x32_c1x1_pre_persistent_s8_tt_none"}));
  // Every layout and epilogue: the kernels take them all.
  for (auto la : {OperandLayout::Row, OperandLayout::Col})
    for (auto lb : {OperandLayout::Row, OperandLayout::Col})
      for (auto ep : {EpilogueKind::None, EpilogueKind::Bias, EpilogueKind::C}) {
        auto q = square(la, lb, 1000, 2048);
        q.epilogue = ep, q.ld_e = ep == EpilogueKind::C ? q.n : 0;
        // coop, pre dp and persistent, and hyb (1000 rows: 8 row tiles).
        EXPECT_EQ(split_v3_names(enumerate_gemm_variants(q, 1e-4, "sm90a", VariantSet::Default)).size(), 4u);
      }
  // Few row tiles (M / 128 <= 8: B re-read little): the hybrid (A pre-split, B split
  // where loaded) too, launched persistent.
  auto batched = square(OperandLayout::Row, OperandLayout::Row, 512, 1024);
  batched.batch = 128, batched.n = batched.ld_b = batched.ld_d = 2048;
  EXPECT_TRUE(names(enumerate_gemm_variants(batched, 1e-4, "sm90a", VariantSet::Default))
                  .count("gemm_sm90split_f16x3_f32_128x128x32_c1x1_hyb_persistent_s5_tn_none"));
  // Small M·N, large K: each operand tile is re-read by at most two output tiles, so a
  // pre-pass (a read and a write of an operand) cannot pay; pre and hyb only in "all".
  auto large_k = square(OperandLayout::Row, OperandLayout::Row, 256, 524288);
  EXPECT_EQ(split_v3_names(enumerate_gemm_variants(large_k, 1e-4, "sm90a", VariantSet::Default)),
            std::vector<std::string>{"gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s3_tn_none"});
  EXPECT_EQ(split_v3_names(enumerate_gemm_variants(large_k, 1e-4, "sm90a", VariantSet::All)).size(), 10u);
}

// Only the pre kernels hand operand images over; the format names part type and count,
// the row tile and the k-tile, so dp / persistent launches and epilogues share it.
TEST(Variant, OperandImageFormat) {
  const auto format = [](const char* name) { return operand_image_format(*parse_variant_name(name)); };
  EXPECT_EQ(format("gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_none"),
            "fact-split-image-v1:f16s:p2:r128:k32:sw64");
  EXPECT_EQ(format("gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_persistent_s6_tt_bias_evtb45b31c6"),
            "fact-split-image-v1:f16s:p2:r128:k32:sw64");
  EXPECT_EQ(format("gemm_sm90split_bf16x6_f32_128x128x32_c1x1_pre_dp_s4_tt_none"),
            "fact-split-image-v1:bf16:p3:r128:k32:sw64");
  EXPECT_EQ(format("gemm_sm90split_bf16_f32_128x128x32_c1x1_pre_dp_s8_tt_none"),
            "fact-split-image-v1:bf16:p1:r128:k32:sw64");
  EXPECT_EQ(format("gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s4_tt_none"), "");
  EXPECT_EQ(format("gemm_sm90_f16x3_f32_128x128x64_c1x1_coop_persistent_sauto_tt_bias"), "");
}

// Schedule -> split kernel: header, namespace, and which kernels are v3 (part ring).
TEST(Variant, SplitKernelBySchedule) {
  GemmVariant v = *parse_variant_name("gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_none");
  ASSERT_NE(split_kernel(v), nullptr);
  EXPECT_STREQ(split_kernel(v)->header, "split_gemm_pre_sm90.cuh");
  EXPECT_STREQ(split_kernel(v)->ns, "fact::split_gemm::pre");
  EXPECT_TRUE(split_kernel(v)->consumer_ring);
  EXPECT_TRUE(split_kernel(v)->persistent);
  v.schedule = Schedule::Coop;
  EXPECT_STREQ(split_kernel(v)->header, "split_gemm_ws_sm90.cuh");
  EXPECT_FALSE(split_kernel(v)->persistent) << "only the pre kernel has a persistent launch";
  v.schedule = Schedule::Ws;
  EXPECT_STREQ(split_kernel(v)->header, "split_gemm_sm90.cuh");
  EXPECT_FALSE(split_kernel(v)->consumer_ring);
  v.schedule = Schedule::Pingpong;
  EXPECT_EQ(split_kernel(v), nullptr);
  v.arch = KernelArch::Sm90, v.schedule = Schedule::Pre;
  EXPECT_EQ(split_kernel(v), nullptr) << "only the sm90split family has split kernels";
  // sm90 (CUTLASS) has no pre schedule.
  v.tile_k = 64, v.stages = 0, v.scheduler = SchedulerKind::Persistent;
  const auto p = square(OperandLayout::Row, OperandLayout::Col);
  EXPECT_TRUE(variant_illegal_reason(v, p).value_or("").find("TMA warp-specialized") != std::string::npos);
}

TEST(Variant, IllegalSplitConfigsHaveAReason) {
  const auto p = square(OperandLayout::Row, OperandLayout::Col);
  GemmVariant v = *parse_variant_name("gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s4_tt_none");
  EXPECT_EQ(variant_illegal_reason(v, p), std::nullopt);
  auto reason = [&](GemmVariant w) { return variant_illegal_reason(w, p).value_or(""); };
  auto contains = [](const std::string& text, const char* part) { return text.find(part) != std::string::npos; };
  GemmVariant w = v;
  w.tile_m = 64;
  EXPECT_TRUE(contains(reason(w), "tile M must be 128")) << reason(w);
  w.schedule = Schedule::Ws;  // v2 takes 64 rows
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w = v, w.tile_m = 256;
  EXPECT_TRUE(contains(reason(w), "tile M must be 128")) << reason(w);
  for (int stages : {1, 9}) {
    w = v, w.stages = stages;
    EXPECT_TRUE(contains(reason(w), "2..8 stages")) << stages << ": " << reason(w);
  }
  w = v, w.stages = 2;  // v3's ring may be 2 deep, v2's may not
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w.schedule = Schedule::Ws;
  EXPECT_TRUE(contains(reason(w), "3..8 stages")) << reason(w);
  // Shared memory as ws::Config::SmemBytes: bf16x6 (3 parts) fits a 3-deep part ring, not 4;
  // f16x3 (2 parts) fits 5 (the fp32 ring drops to 2 deep), not 6.
  w = v, w.math = MathMode::BF16x6, w.stages = 3;
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w.stages = 4;
  EXPECT_TRUE(contains(reason(w), "shared memory")) << reason(w);
  EXPECT_TRUE(contains(reason(w), "fewer stages")) << reason(w);
  w = v, w.stages = 5;
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w.stages = 6;
  EXPECT_TRUE(contains(reason(w), "shared memory")) << reason(w);
  // Pre's ring holds parts only (split_gemm_pre_sm90.cuh's SmemBytes): f16x3 fits 7 stages,
  // not 8; bf16x6 4, not 5; and it needs tile M 128 like coop.
  w = v, w.schedule = Schedule::Pre, w.stages = 7;
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w.stages = 8;
  EXPECT_TRUE(contains(reason(w), "shared memory")) << reason(w);
  w.math = MathMode::BF16x6, w.stages = 4;
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w.stages = 5;
  EXPECT_TRUE(contains(reason(w), "shared memory")) << reason(w);
  // The hybrid's fp32 ring holds B only (split_gemm_hybrid_sm90.cuh's SmemBytes): f16x3
  // fits 6 part stages (the ring drops to 2 deep), not 7.
  w = v, w.schedule = Schedule::Hybrid, w.stages = 6;
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w.stages = 7;
  EXPECT_TRUE(contains(reason(w), "shared memory")) << reason(w);
  w = v, w.schedule = Schedule::Pre, w.tile_m = 64;
  EXPECT_TRUE(contains(reason(w), "(pre) have two consumer warpgroups")) << reason(w);
  w = v, w.schedule = Schedule::Pingpong;
  EXPECT_TRUE(contains(reason(w), "schedule ws")) << reason(w);
  w = v, w.tile_n = 256;
  EXPECT_TRUE(contains(reason(w), "tile N must be 64 or 128")) << reason(w);
  w = v, w.tile_k = 64;
  EXPECT_TRUE(contains(reason(w), "tile K must be 32")) << reason(w);
  w = v, w.scheduler = SchedulerKind::Persistent;  // only the pre and hyb kernels launch persistent
  EXPECT_TRUE(contains(reason(w), "data-parallel")) << reason(w);
  w.schedule = Schedule::Pre, w.stages = 6;
  EXPECT_EQ(variant_illegal_reason(w, p), std::nullopt) << reason(w);
  w.scheduler = SchedulerKind::StreamK;
  EXPECT_TRUE(contains(reason(w), "data-parallel")) << reason(w);
  w = v, w.cluster_m = 2;
  EXPECT_TRUE(contains(reason(w), "cluster 1x1")) << reason(w);
  w = v, w.math = MathMode::TF32x3;
  EXPECT_TRUE(contains(reason(w), "no tf32x3 math mode")) << reason(w);
  // A registry row naming an illegal v3 is not rebuilt (realize's warm path asks the same).
  auto recorded = parse_variant_name("gemm_sm90split_bf16x6_f32_128x128x32_c1x1_coop_dp_s4_tt_none");
  ASSERT_TRUE(recorded.has_value());
  EXPECT_TRUE(variant_illegal_reason(*recorded, p).has_value());
}

// ---- 16-bit I/O -------------------------------------------------------------------------

GemmProblemDesc sixteen_bit(const std::string& dtype, OperandLayout la = OperandLayout::Row,
                            OperandLayout lb = OperandLayout::Col, int64_t n = 4096, int64_t k = 0) {
  GemmProblemDesc p = square(la, lb, n, k);
  p.element_a = p.element_b = p.element_d = dtype;
  p.epilogue = EpilogueKind::Bias;
  return p;
}

// fp16 / bf16 problems get sm90 variants that read and write their own type (the name's
// 4th field), at either tolerance class: three tiles by default; every fp32-I/O candidate
// of the other families is skipped with the dtype as its reason.
TEST(Variant, SixteenBitProblemsEnumerateSixteenBitIoVariants) {
  for (const auto& [dtype, io, tok] : {std::tuple{"float16", IoType::F16, "f16"}, std::tuple{"bfloat16", IoType::BF16, "bf16"}})
    for (double tol : {1e-2, 1e-4}) {
      SCOPED_TRACE(std::string(dtype) + " at " + std::to_string(tol));
      const auto p = sixteen_bit(dtype);
      ASSERT_EQ(problem_io_type(p), io);
      const auto e = enumerate_gemm_variants(p, tol, "sm90a", VariantSet::Default);
      const std::string t = tok;
      EXPECT_EQ(names(e), (std::set<std::string>{
                              "gemm_sm90_" + t + "_" + t + "_128x256x64_c1x1_coop_persistent_sauto_tt_bias",
                              "gemm_sm90_" + t + "_" + t + "_256x128x64_c1x1_coop_persistent_sauto_tt_bias",
                              "gemm_sm90_" + t + "_" + t + "_128x128x64_c1x1_pingpong_persistent_sauto_tt_bias"}));
      for (const auto& v : e.variants) {
        EXPECT_EQ(v.io, io);
        EXPECT_EQ(v.math, *io_native_math(io));
      }
      bool split_skipped = false, sm80_skipped = false;
      for (const auto& s : e.skipped) {
        EXPECT_NE(s.reason.find(std::string("this problem's A, B and D are ") + dtype), std::string::npos)
            << s.name << ": " << s.reason;
        split_skipped |= s.name.rfind("gemm_sm90split_", 0) == 0;
        sm80_skipped |= s.name.rfind("gemm_sm80_", 0) == 0;
      }
      EXPECT_TRUE(split_skipped && sm80_skipped);
      // Large K over few output tiles: stream-K and split-K instead.
      const auto large_k = enumerate_gemm_variants(sixteen_bit(dtype, OperandLayout::Row, OperandLayout::Col, 256, 524288),
                                                   tol, "sm90a", VariantSet::Default);
      ASSERT_EQ(large_k.variants.size(), 2u);
      EXPECT_EQ(large_k.variants[0].scheduler, SchedulerKind::StreamK);
      EXPECT_EQ(large_k.variants[1].scheduler, SchedulerKind::SplitK);
      // "all" is a superset, every name round-trips, and only 16-bit I/O sm90 variants are legal.
      const auto all = enumerate_gemm_variants(p, tol, "sm90a", VariantSet::All);
      EXPECT_GT(all.variants.size(), 20u);
      const auto all_names = names(all);
      for (const auto& name : names(e)) EXPECT_TRUE(all_names.count(name)) << name;
      for (const auto& v : all.variants) {
        EXPECT_EQ(v.arch, KernelArch::Sm90) << v.name();
        EXPECT_EQ(v.io, io) << v.name();
        const auto parsed = parse_variant_name(v.name());
        ASSERT_TRUE(parsed.has_value()) << v.name();
        EXPECT_EQ(parsed->io, io);
        EXPECT_EQ(parsed->name(), v.name());
      }
    }
}

// The 4th field tells 16-bit I/O from fp32 I/O with a 16-bit math mode (which converts
// fp32 operands in a pre-pass): two kernels, two names, neither runs the other's problem.
TEST(Variant, SixteenBitIoIsItsOwnIdentity) {
  const auto io16 = parse_variant_name("gemm_sm90_f16_f16_128x256x64_c1x1_coop_persistent_sauto_tt_bias");
  const auto io32 = parse_variant_name("gemm_sm90_f16_f32_128x256x64_c1x1_coop_persistent_sauto_tt_bias");
  ASSERT_TRUE(io16 && io32);
  EXPECT_EQ(io16->io, IoType::F16);
  EXPECT_EQ(io32->io, IoType::F32);
  EXPECT_EQ(io16->math, io32->math);
  EXPECT_FALSE(*io16 == *io32);
  EXPECT_FALSE(parse_variant_name("gemm_sm90_f16_f8_128x256x64_c1x1_coop_persistent_sauto_tt_bias").has_value());
  const auto fp32 = [] {
    auto p = square(OperandLayout::Row, OperandLayout::Col);
    p.epilogue = EpilogueKind::Bias;
    return p;
  }();
  const auto half = sixteen_bit("float16");
  EXPECT_FALSE(variant_illegal_reason(*io16, half).has_value());
  EXPECT_FALSE(variant_illegal_reason(*io32, fp32).has_value());
  EXPECT_NE(variant_illegal_reason(*io16, fp32).value_or("").find("reads and writes float16 (f16 I/O)"),
            std::string::npos);
  EXPECT_NE(variant_illegal_reason(*io32, half).value_or("").find("A, B and D are float16"), std::string::npos);
  // bf16 data is not f16 data, and 16-bit I/O multiplies in its own type.
  EXPECT_NE(variant_illegal_reason(*io16, sixteen_bit("bfloat16")).value_or("").find("are bfloat16"),
            std::string::npos);
  GemmVariant wrong_math = *io16;
  wrong_math.math = MathMode::BF16x3;
  EXPECT_NE(variant_illegal_reason(wrong_math, half).value_or("").find("math of its own type (f16)"),
            std::string::npos);
  // Mixed element types have no variant at all.
  auto mixed = half;
  mixed.element_d = "float32";
  EXPECT_FALSE(problem_io_type(mixed).has_value());
  EXPECT_NE(variant_illegal_reason(*io16, mixed).value_or("").find("one element type for A, B and D"),
            std::string::npos);
  // 16-bit I/O is sm90's only.
  for (KernelArch arch : {KernelArch::Sm80, KernelArch::Sm90Split}) {
    auto other = parse_variant_name(arch == KernelArch::Sm80 ? "gemm_sm80_tf32x3_f32_128x128x16_c1x1_mstage_dp_s4_tt_bias"
                                                             : "gemm_sm90split_bf16_f32_128x128x32_c1x1_pre_dp_s8_tt_bias");
    ASSERT_TRUE(other.has_value());
    other->io = IoType::F16;
    EXPECT_NE(variant_illegal_reason(*other, half).value_or("").find("sm90 family (CUTLASS 3.x) only"),
              std::string::npos)
        << other->name();
  }
  const auto a100 = enumerate_gemm_variants(half, 1e-2, "sm80", VariantSet::Default);
  EXPECT_TRUE(a100.variants.empty());
  EXPECT_NE(a100.reason.find("float16"), std::string::npos) << a100.reason;
}

// A 16-bit I/O variant rounds no operand: admitted at both tolerance classes, and never
// held back for an accuracy probe; the same math on fp32 I/O is relaxed-only.
TEST(Variant, SixteenBitIoIsAdmittedAtEveryTolerance) {
  const auto io16 = *parse_variant_name("gemm_sm90_bf16_bf16_128x256x64_c1x1_coop_persistent_sauto_tt_none");
  const auto io32 = *parse_variant_name("gemm_sm90_bf16_f32_128x256x64_c1x1_coop_persistent_sauto_tt_none");
  EXPECT_TRUE(variant_admitted(io16, ToleranceClass::Fp32Faithful));
  EXPECT_TRUE(variant_admitted(io16, ToleranceClass::Relaxed));
  EXPECT_FALSE(variant_admitted(io32, ToleranceClass::Fp32Faithful));
  EXPECT_TRUE(variant_admitted(io32, ToleranceClass::Relaxed));
}

// One alignment check for every element size: 16 bytes are 8 fp16 / bf16 elements, so an
// extent that fp32 variants accept (a multiple of 4) can still rule out 16-bit I/O.
TEST(Variant, SixteenBitAlignmentCountsEightElementUnits) {
  auto k1020 = sixteen_bit("float16", OperandLayout::Row, OperandLayout::Col, 1024, 1020);
  auto e = enumerate_gemm_variants(k1020, 1e-2, "sm90a", VariantSet::Default);
  EXPECT_TRUE(e.variants.empty());
  EXPECT_NE(e.reason.find("k (A's rows) = 1020 is not a multiple of 8 (16-byte rows)"), std::string::npos)
      << e.reason;
  auto fp32 = k1020;
  fp32.element_a = fp32.element_b = fp32.element_d = "float32";
  bool fp32_sm90 = false;
  for (const auto& v : enumerate_gemm_variants(fp32, 1e-2, "sm90a", VariantSet::Default).variants)
    fp32_sm90 |= v.arch == KernelArch::Sm90;
  EXPECT_TRUE(fp32_sm90) << "k = 1020 is 16-byte aligned for fp32";
  auto ld_d = sixteen_bit("bfloat16", OperandLayout::Row, OperandLayout::Col, 1024);
  ld_d.ld_d = 1028;
  const auto v = *parse_variant_name("gemm_sm90_bf16_bf16_128x256x64_c1x1_coop_persistent_sauto_tt_bias");
  EXPECT_NE(variant_illegal_reason(v, ld_d).value_or("").find("ld of D = 1028 is not a multiple of 8"),
            std::string::npos);
  auto c = sixteen_bit("bfloat16", OperandLayout::Row, OperandLayout::Col, 1024);
  c.epilogue = EpilogueKind::C, c.ld_e = 1036;
  auto vc = v;
  vc.epilogue = EpilogueKind::C;
  EXPECT_NE(variant_illegal_reason(vc, c).value_or("").find("ld of C = 1036 is not a multiple of 8"),
            std::string::npos);
  // MN-major operands are fine for 16-bit wgmma (unlike tf32), and contiguous in m / n.
  auto nn = sixteen_bit("float16", OperandLayout::Col, OperandLayout::Row, 1024);
  EXPECT_EQ(enumerate_gemm_variants(nn, 1e-2, "sm90a", VariantSet::Default).variants.size(), 3u);
  nn.m = 1020, nn.ld_a = 1020, nn.ld_d = 1024;
  EXPECT_NE(enumerate_gemm_variants(nn, 1e-2, "sm90a", VariantSet::Default).reason.find("m (A's columns) = 1020"),
            std::string::npos);
  // TMA reads the operands as they are: an operand shared across the batch is not taken.
  auto shared_b = sixteen_bit("float16", OperandLayout::Row, OperandLayout::Col, 1024);
  shared_b.batch = 4, shared_b.batch_stride_a = 1024 * 1024, shared_b.batch_stride_d = 1024 * 1024;
  EXPECT_NE(enumerate_gemm_variants(shared_b, 1e-2, "sm90a", VariantSet::Default).reason.find("non-zero batch strides"),
            std::string::npos);
}

TEST(Variant, ToleranceClasses) {
  EXPECT_EQ(tolerance_class(1e-4), ToleranceClass::Fp32Faithful);
  EXPECT_EQ(tolerance_class(1e-5), ToleranceClass::Fp32Faithful);
  EXPECT_EQ(tolerance_class(1e-2), ToleranceClass::Relaxed);
  EXPECT_THROW(parse_variant_set("most"), std::runtime_error);
  EXPECT_EQ(parse_variant_set("all"), VariantSet::All);
}

TEST(Variant, ProblemFromPlanJson) {
  auto g = nlohmann::json::parse(R"({"batch": 2, "m": 64, "n": 32, "k": 16,
    "a": {"tensor": "x", "layout": "col", "ld": 64, "batch_stride": 1024},
    "b": {"tensor": "w", "layout": "row", "ld": 32, "batch_stride": 0},
    "d": {"tensor": "y", "ld": 32, "batch_stride": 2048},
    "epilogue": {"kind": "bias", "tensor": "b", "ld": 0, "batch_stride": 0, "alpha": 1.0, "beta": 1.0},
    "element_a": "float32", "element_b": "float32", "element_d": "float32"})");
  auto p = gemm_problem_from_json(g);
  EXPECT_EQ(p.batch, 2);
  EXPECT_EQ(p.layout_a, OperandLayout::Col);
  EXPECT_EQ(p.layout_b, OperandLayout::Row);
  EXPECT_EQ(p.batch_stride_a, 1024);
  EXPECT_EQ(p.epilogue, EpilogueKind::Bias);
  g["a"]["layout"] = "diagonal";
  EXPECT_THROW(gemm_problem_from_json(g), std::runtime_error);
  g.erase("a");
  try {
    gemm_problem_from_json(g);
    FAIL() << "missing field accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'a'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fact

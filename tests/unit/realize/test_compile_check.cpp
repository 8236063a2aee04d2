// Compile check: one emitted variant per kernel family goes through the real
// nvcc + CUTLASS into a throw-away cache, and the library's host-side ABI is
// exercised (name, ABI version, can_implement rejections) without a GPU.
// Skips (saying why) where nvcc or CUTLASS is missing. ~1 min per sm90
// translation unit on 2 cores, so each test compiles one at a time.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>
#include <functional>
#include <optional>

#include "fact/build.hpp"
#include "fact/emit.hpp"
#include "fact/epilogue_emit.hpp"
#include "fact/kernel_abi.h"
#include "fact/pattern_realizer.hpp"
#include "realize_test_util.hpp"

namespace fact {
namespace {

struct Library {
  void* handle = nullptr;
  explicit Library(const std::string& path) { handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL); }
  ~Library() {
    if (handle) ::dlclose(handle);
  }
  template <class F>
  F* fn(const char* name) {
    return reinterpret_cast<F*>(::dlsym(handle, name));
  }
};

// The real toolchain; `skip` says why the compile checks cannot run here ("" when they can).
std::optional<Toolchain> compile_check_toolchain(std::string& skip) {
  std::string why;
  auto tc = resolve_toolchain(&why);
  if (!tc)
    skip = "nvcc or CUTLASS missing, compile check skipped: " + why;
  else if (const char* env = std::getenv("FACT_SKIP_COMPILE_CHECK"); env && std::string(env) == "1")
    skip = "FACT_SKIP_COMPILE_CHECK=1";
  return tc;
}

// Compiles `jobs` one translation unit at a time into `cache` (the libraries live
// there: keep it while they are open), with progress on stderr.
std::vector<CompileResult> compile_in_turn(const Toolchain& tc, const fs::path& cache,
                                           const std::vector<CompileJob>& jobs) {
  return compile_all(tc, cache.string(), jobs, 1, [](const CompileResult& r, int i, int n) {
    std::fprintf(stderr, "[compile check] %d/%d %s %s (%.0f s)\n", i, n, r.ok ? "ok" : "FAILED", r.name.c_str(),
                 r.seconds);
  });
}

// The symbols every kernel library exports (FACT_EXPORT_LIBRARY_IDENTITY): its
// variant's name, the ABI version, and fact_last_error.
void expect_library_identity(Library& lib, const std::string& variant) {
  auto name = lib.fn<const char*()>("fact_variant_name");
  auto abi = lib.fn<int()>("fact_abi_version");
  ASSERT_TRUE(name && abi && lib.fn<const char*()>("fact_last_error")) << variant << " lacks an identity symbol";
  EXPECT_EQ(std::string(name()), variant);
  EXPECT_EQ(abi(), FACT_KERNEL_ABI_VERSION);
}

// Compiles the GEMM variants `names`, loads each library and checks its identity and
// that can_implement rejects a null problem and one with a zero extent, on the host,
// with a reason containing `zero_extent_reason`; then runs `more` on each library.
void compile_gemm_variants_and_check_abi(const std::vector<std::string>& names, const std::string& zero_extent_reason,
                                         const std::function<void(Library&, const std::string&)>& more = {}) {
  std::string skip;
  auto tc = compile_check_toolchain(skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  std::vector<CompileJob> jobs;
  for (const auto& n : names) {
    auto v = parse_variant_name(n);
    ASSERT_TRUE(v.has_value()) << n;
    jobs.push_back({n, emit_variant_source(*v), nvcc_flags(v->arch, "sm90a")});
  }
  TempDir t;
  auto results = compile_in_turn(*tc, t.path / "cache", jobs);
  ASSERT_EQ(results.size(), names.size());
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok) << r.name << " failed to compile:\n" << r.reason << "\nlog: " << r.log_path;
    Library lib(r.library);
    ASSERT_NE(lib.handle, nullptr) << ::dlerror();
    ASSERT_NO_FATAL_FAILURE(expect_library_identity(lib, r.name));
    auto can = lib.fn<int(const FactGemmProblem*)>("fact_gemm_can_implement");
    auto last_error = lib.fn<const char*()>("fact_last_error");
    ASSERT_TRUE(can && last_error) << r.name << " lacks an ABI symbol";
    EXPECT_NE(can(nullptr), 0);
    FactGemmProblem p{};
    p.batch = 1, p.m = 0, p.n = 64, p.k = 64;
    EXPECT_NE(can(&p), 0) << r.name;
    EXPECT_NE(std::string(last_error()).find(zero_extent_reason), std::string::npos) << r.name << ": " << last_error();
    // The operand-image format the library names is the one compose predicts from the
    // variant name (operand_image_format); a library without one rejects image problems.
    auto image_format = lib.fn<const char*()>("fact_gemm_image_format");
    auto image_bytes = lib.fn<size_t(const FactGemmProblem*, int)>("fact_gemm_image_bytes");
    ASSERT_TRUE(image_format && image_bytes) << r.name << " lacks the ABI 3 image symbols";
    const std::string format = operand_image_format(*parse_variant_name(r.name));
    EXPECT_EQ(std::string(image_format()), format) << r.name;
    p.m = 256;
    EXPECT_EQ(image_bytes(&p, 0) > 0, !format.empty()) << r.name;
    if (format.empty()) {
      p.a = reinterpret_cast<const void*>(1 << 20), p.b = reinterpret_cast<const void*>(2 << 20);
      p.d = reinterpret_cast<void*>(3 << 20), p.e = reinterpret_cast<const void*>(4 << 20);
      p.ld_a = p.ld_b = p.ld_d = p.ld_e = 64;
      p.a_image = reinterpret_cast<const void*>(5 << 20);
      EXPECT_NE(can(&p), 0) << r.name;
      EXPECT_NE(std::string(last_error()).find("operand images"), std::string::npos) << r.name << ": " << last_error();
    }
    if (more) more(lib, r.name);
  }
}

TEST(CompileCheck, OneVariantPerFamilyCompilesAndExportsTheAbi) {
  compile_gemm_variants_and_check_abi(
      {
          // promoted mainloop + scaled fp16 split pre-pass + stream-K + bias EVT
          "gemm_sm90_f16x3_f32_128x128x64_c1x1_coop_streamk_sauto_tt_bias",
          // plain tf32 wgmma on fp32 operands, C epilogue, cluster 2x1
          "gemm_sm90_tf32_f32_128x128x32_c2x1_coop_persistent_sauto_tt_c",
          "gemm_sm80_tf32x3_f32_128x128x16_c1x1_mstage_dp_s4_tn_bias",
          "gemm_sm80_f32_f32_128x128x8_c1x1_simt_splitk4_s3_nn_none",
      },
      "positive");
}

// FACT's split kernels, a separate test so that ctest -j runs it beside the one above:
// v2 (schedule ws, bf16 parts), v3 (schedule coop, the warp-specialized kernel,
// scaled fp16 parts), v3 pre (schedule pre, pre-split operands) and v3 hybrid (schedule
// hyb, A pre-split). ~1 min each on 2 cores.
TEST(CompileCheck, SplitKernelVariantsCompileAndExportTheAbi) {
  compile_gemm_variants_and_check_abi(
      {
          "gemm_sm90split_bf16x6_f32_128x128x32_c1x1_ws_dp_s4_tn_bias",
          "gemm_sm90split_f16x3_f32_128x128x32_c1x1_coop_dp_s3_nt_c",
          "gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_persistent_s6_tn_none",
          "gemm_sm90split_f16x3_f32_128x128x32_c1x1_hyb_persistent_s5_tt_bias",
      },
      "must be >= 1");
}

// 16-bit I/O (fp16 operands, bias and output; fp16 wgmma, fp32 accumulation): the
// plain bias epilogue. ~1-1.5 min. Its host checks count 16-byte units of 8 elements.
TEST(CompileCheck, SixteenBitIoVariantCompilesAndChecksEightElementUnits) {
  compile_gemm_variants_and_check_abi(
      {"gemm_sm90_f16_f16_128x256x64_c1x1_coop_persistent_sauto_tt_bias"}, "positive",
      [](Library& lib, const std::string& name) {
        auto can = lib.fn<int(const FactGemmProblem*)>("fact_gemm_can_implement");
        auto last_error = lib.fn<const char*()>("fact_last_error");
        FactGemmProblem p{};
        p.batch = 1, p.m = 256, p.n = 1028, p.k = 64;
        p.a = reinterpret_cast<const void*>(1 << 20), p.ld_a = 64;
        p.b = reinterpret_cast<const void*>(2 << 20), p.ld_b = 64;
        p.d = reinterpret_cast<void*>(3 << 20), p.ld_d = 1028;  // 16-byte rows for fp32, not fp16
        p.e = reinterpret_cast<const void*>(4 << 20);
        p.alpha = 1.f, p.beta = 1.f;
        EXPECT_NE(can(&p), 0) << name;
        EXPECT_NE(std::string(last_error()).find("multiples of 8 (fp16)"), std::string::npos) << last_error();
        p.n = p.ld_d = 1024, p.k = p.ld_a = p.ld_b = 68;  // A and B are read as they are: k too
        EXPECT_NE(can(&p), 0) << name;
        EXPECT_NE(std::string(last_error()).find("read by TMA as they are"), std::string::npos) << last_error();
      });
}

// A GEMM + bias pattern whose chain reads every input kind (a full-size residual, a
// column vector, a scalar) and spells a spread of ops; `dtype` is its operands', leaves'
// and output's element type.
nlohmann::json every_kind_chain_pattern(const std::string& dtype = "float32") {
  using nlohmann::json;
  const json acc = {{"ref", "acc"}};
  auto ref = [](const char* id) { return json{{"ref", id}}; };
  auto leaf = [](const char* id) { return json{{"leaf", id}}; };
  auto cst = [](double x) { return json{{"const", x}}; };
  const json values = json::array({
      {{"id", "v0"}, {"op", "add"}, {"args", {acc, leaf("l0")}}},
      {{"id", "v1"}, {"op", "mul"}, {"args", {ref("v0"), leaf("l1")}}},
      {{"id", "v2"}, {"op", "gelu"}, {"args", {ref("v1")}}, {"approximate", "tanh"}},
      {{"id", "v3"}, {"op", "clamp"}, {"args", {ref("v2"), json{{"const", nullptr}}, cst(6.0)}}},
      {{"id", "v4"}, {"op", "sub"}, {"args", {ref("v3"), leaf("l2")}}, {"alpha", 0.5}},
      {{"id", "v5"}, {"op", "pow"}, {"args", {ref("v4"), cst(3.0)}}},
      {{"id", "v6"}, {"op", "sigmoid"}, {"args", {ref("v5")}}},
      {{"id", "v7"}, {"op", "div"}, {"args", {ref("v6"), cst(3.0)}}},
  });
  return {
      {"gemm",
       {{"batch", 1}, {"m", 256}, {"n", 128}, {"k", 64},
        {"a", {{"tensor", "x"}, {"layout", "row"}, {"ld", 64}, {"batch_stride", 0}}},
        {"b", {{"tensor", "w"}, {"layout", "col"}, {"ld", 64}, {"batch_stride", 0}}},
        {"d", {{"tensor", "mm"}, {"ld", 128}, {"batch_stride", 0}}},
        {"epilogue", {{"kind", "bias"}, {"tensor", "bias"}, {"ld", 0}, {"batch_stride", 0}, {"alpha", 1.0}, {"beta", 1.0}}},
        {"element_a", dtype}, {"element_b", dtype}, {"element_d", dtype}}},
      {"epilogue_chain",
       {{"accumulator", "mm"}, {"output", "out"}, {"shape", {256, 128}}, {"element", dtype},
        {"leaves",
         {{"l0", {{"tensor", "residual"}, {"shape", {256, 128}}, {"strides", {128, 1}}}},
          {"l1", {{"tensor", "row_scale"}, {"shape", {256, 1}}, {"strides", {1, 0}}}},
          {"l2", {{"tensor", "shift"}, {"shape", json::array()}, {"strides", {0, 0}}}}}},
        {"values", values}, {"result", "v7"}, {"key", "c0ffee00deadbeef"}}}};
}

// Compiles `variant_name` with every_kind_chain_pattern()'s chain, loads it and checks
// the host-side rejections before any device query: too few leaves, a null leaf; then
// returns the problem that passes those two, and the library's entry points.
struct ChainLibrary {
  std::unique_ptr<Library> lib;
  int (*can)(const FactGemmProblem*) = nullptr;
  const char* (*last_error)() = nullptr;
  FactGemmProblem problem{};
};
void compile_chain_variant(const std::string& variant_name, ChainLibrary& out, const std::string& dtype = "float32") {
  std::string skip;
  auto tc = compile_check_toolchain(skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ChainPlan plan = plan_chain_epilogue(every_kind_chain_pattern(dtype));
  ASSERT_TRUE(plan.skip_reason.empty()) << plan.skip_reason;
  auto v = parse_variant_name(variant_name);
  ASSERT_TRUE(v.has_value());
  TempDir t;
  auto results = compile_in_turn(*tc, t.path / "cache",
                                 {{v->name(), emit_chain_variant_source(*v, plan), nvcc_flags(v->arch, "sm90a")}});
  ASSERT_EQ(results.size(), 1u);
  const auto& r = results[0];
  ASSERT_TRUE(r.ok) << r.name << " failed to compile:\n" << r.reason << "\nlog: " << r.log_path;
  out.lib = std::make_unique<Library>(r.library);
  ASSERT_NE(out.lib->handle, nullptr) << ::dlerror();
  ASSERT_NO_FATAL_FAILURE(expect_library_identity(*out.lib, v->name()));
  out.can = out.lib->fn<int(const FactGemmProblem*)>("fact_gemm_can_implement");
  out.last_error = out.lib->fn<const char*()>("fact_last_error");
  ASSERT_TRUE(out.can && out.last_error);
  FactGemmProblem& p = out.problem;
  p.batch = 1, p.m = 256, p.n = 128, p.k = 64;
  p.a = reinterpret_cast<const void*>(1 << 20), p.ld_a = 64;
  p.b = reinterpret_cast<const void*>(2 << 20), p.ld_b = 64;
  p.d = reinterpret_cast<void*>(3 << 20), p.ld_d = 128;
  p.e = reinterpret_cast<const void*>(4 << 20);
  p.alpha = 1.f, p.beta = 1.f;
  p.num_leaves = 2;
  EXPECT_NE(out.can(&p), 0);
  EXPECT_NE(std::string(out.last_error()).find("reads 3 leaf tensor(s)"), std::string::npos) << out.last_error();
  p.num_leaves = 3;
  p.leaves[0] = {reinterpret_cast<const void*>(5 << 20), 128, 0};
  p.leaves[1] = {nullptr, 0, 0};
  p.leaves[2] = {reinterpret_cast<const void*>(7 << 20), 0, 0};
  EXPECT_NE(out.can(&p), 0);
  EXPECT_NE(std::string(out.last_error()).find("leaves[1] is null"), std::string::npos) << out.last_error();
  p.leaves[1].ptr = reinterpret_cast<const void*>(6 << 20);
}

// GEMM + epilogue chain as an sm90 EVT translation unit through the scaled f16x3 math
// mode (device alpha). ~1.5-2.5 min and ~3.5 GB with nvcc 13.
TEST(CompileCheck, EpilogueChainEvtVariantCompilesAndChecksItsLeaves) {
  ChainLibrary c;
  ASSERT_NO_FATAL_FAILURE(compile_chain_variant(
      "gemm_sm90_f16x3_f32_128x128x64_c1x1_coop_persistent_sauto_tt_bias_evtc0ffee00", c));
  if (!c.lib) return;  // skipped
  // The residual is the EVT's C source, read by TMA: 16-byte rows.
  c.problem.leaves[0].ld = 130;
  EXPECT_NE(c.can(&c.problem), 0);
  EXPECT_NE(std::string(c.last_error()).find("leaves[0] (full matrix"), std::string::npos) << c.last_error();
}

// The same chain on bf16 I/O: bf16 operands, leaves (a bf16 residual as the C source, a
// bf16 column vector and scalar) and output, the functor in float. ~1.5-2.5 min.
TEST(CompileCheck, SixteenBitEpilogueChainEvtVariantCompilesAndChecksItsLeaves) {
  ChainLibrary c;
  ASSERT_NO_FATAL_FAILURE(compile_chain_variant(
      "gemm_sm90_bf16_bf16_128x128x64_c1x1_coop_persistent_sauto_tt_bias_evtc0ffee00", c, "bfloat16"));
  if (!c.lib) return;  // skipped
  // 16-byte rows of the bf16 residual are 8 elements: ld 132 is not.
  c.problem.leaves[0].ld = 132;
  EXPECT_NE(c.can(&c.problem), 0);
  EXPECT_NE(std::string(c.last_error()).find("leaves[0] (full matrix, the C source) needs ld >= n, ld and batch "
                                             "stride multiples of 8"),
            std::string::npos)
      << c.last_error();
  // A scalar leaf needs only its own 2-byte alignment.
  c.problem.leaves[0].ld = 128;
  c.problem.leaves[2].ptr = reinterpret_cast<const char*>(c.problem.leaves[2].ptr) + 1;
  EXPECT_NE(c.can(&c.problem), 0);
  EXPECT_NE(std::string(c.last_error()).find("leaves[2] (scalar) is not 2-byte aligned"), std::string::npos)
      << c.last_error();
}

// The same chain in the pre-split kernel's element-wise store (seconds to a minute).
TEST(CompileCheck, EpilogueChainSplitVariantCompilesAndChecksItsLeaves) {
  ChainLibrary c;
  ASSERT_NO_FATAL_FAILURE(
      compile_chain_variant("gemm_sm90split_f16x3_f32_128x128x32_c1x1_pre_dp_s6_tt_bias_evtc0ffee00", c));
  if (!c.lib) return;  // skipped
  // Element-wise loads take any row pitch >= n, but not a pitch below it.
  c.problem.leaves[0].ld = 130;
  EXPECT_EQ(c.can(&c.problem), 0) << c.last_error();
  c.problem.leaves[0].ld = 100;
  EXPECT_NE(c.can(&c.problem), 0);
  EXPECT_NE(std::string(c.last_error()).find("leaves[0] (full matrix) has ld < n"), std::string::npos)
      << c.last_error();
}

// One LayerNorm TU (seconds) and two attention TUs (CUTLASS example 41, ~15-60 s; the
// sm90a f16x3 kernel, ~20 s) through the real nvcc; their host-side ABI rejects bad
// problems with reasons.
TEST(CompileCheck, LayerNormAndAttentionVariantsCompileAndExportTheirAbi) {
  std::string skip;
  auto tc = compile_check_toolchain(skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  const auto ln = *parse_layernorm_variant_name("layernorm_f32_c768_w4_v4_res_sum");
  const auto att = *parse_attention_variant_name("attention_sm80_tf32x3_f32_32x128_maxk128");
  // The widest rows the image writer takes (kLayerNormImageMaxCols): one CTA per SM there.
  const auto wide = *parse_layernorm_variant_name("layernorm_f32_c2048_w2_v4_plain");
  ASSERT_FALSE(layernorm_image_formats(wide).empty());
  const auto att90 = *parse_attention_variant_name("attention_sm90_f16x3_f32_d96_k64_s32_pv64");
  std::vector<CompileJob> jobs{{ln.name(), emit_layernorm_source(ln, "sm90a"), layernorm_nvcc_flags("sm90a")},
                               {att.name(), emit_attention_source(att), nvcc_flags(KernelArch::Sm80, "sm90a")},
                               {wide.name(), emit_layernorm_source(wide, "sm90a"), layernorm_nvcc_flags("sm90a")},
                               {att90.name(), emit_attention_source(att90), nvcc_flags(KernelArch::Sm90, "sm90a")}};
  TempDir t;
  auto results = compile_in_turn(*tc, t.path / "cache", jobs);
  for (const auto& r : results) ASSERT_TRUE(r.ok) << r.name << " failed to compile:\n" << r.reason << "\nlog: " << r.log_path;
  auto addr = [](int mib) { return reinterpret_cast<void*>(static_cast<uintptr_t>(mib) << 20); };
  {
    Library lib(results[0].library);
    ASSERT_NE(lib.handle, nullptr) << ::dlerror();
    ASSERT_NO_FATAL_FAILURE(expect_library_identity(lib, ln.name()));
    auto can = lib.fn<int(const FactLayerNormProblem*)>("fact_layernorm_can_implement");
    auto run = lib.fn<int(const FactLayerNormProblem*, void*)>("fact_layernorm_run");
    auto last_error = lib.fn<const char*()>("fact_last_error");
    ASSERT_TRUE(can && run && last_error) << "layernorm library lacks an ABI symbol";
    EXPECT_NE(can(nullptr), 0);
    FactLayerNormProblem p{};
    p.rows = 64, p.cols = 768, p.eps = 1e-5f;
    p.x = addr(1), p.residual = addr(2), p.sum = addr(3), p.y = addr(4), p.weight = addr(5), p.bias = addr(6);
    p.x_row_stride = p.residual_row_stride = p.sum_row_stride = p.y_row_stride = 768;
    EXPECT_EQ(can(&p), 0) << last_error();
    p.cols = 512;
    EXPECT_NE(can(&p), 0);
    EXPECT_NE(std::string(last_error()).find("rows of 768 columns"), std::string::npos) << last_error();
    p.cols = 768, p.x = reinterpret_cast<const char*>(addr(1)) + 4;
    EXPECT_NE(can(&p), 0);
    EXPECT_NE(std::string(last_error()).find("x is not 16-byte aligned"), std::string::npos) << last_error();
    p.x = addr(1), p.sum = nullptr;
    EXPECT_NE(can(&p), 0);
    EXPECT_NE(std::string(last_error()).find("sum is null"), std::string::npos) << last_error();
    // The image entry points (ABI 4): the library writes exactly the C++ core's formats.
    auto formats = lib.fn<const char*()>("fact_layernorm_image_formats");
    auto image_bytes = lib.fn<size_t(const FactLayerNormProblem*, const char*)>("fact_layernorm_image_bytes");
    auto image_can = lib.fn<int(const FactLayerNormProblem*, const char*)>("fact_layernorm_image_can_implement");
    auto run_image = lib.fn<int(const FactLayerNormProblem*, const char*, void*, void*)>("fact_layernorm_run_image");
    ASSERT_TRUE(formats && image_bytes && image_can && run_image) << "layernorm library lacks an image symbol";
    std::string expected;
    for (const std::string& f : split_image_formats()) expected += (expected.empty() ? "" : ";") + f;
    EXPECT_EQ(formats(), expected);
    p.sum = addr(3), p.y = nullptr, p.y_row_stride = 0;  // y is not read in image mode
    const std::string f16x3 = split_image_formats().front();
    EXPECT_EQ(image_can(&p, f16x3.c_str()), 0) << last_error();
    // 64 rows -> one 128-row tile x 24 k-tiles of 2 fp16 parts, then 24 int4 exponents.
    EXPECT_EQ(image_bytes(&p, f16x3.c_str()), 24u * 2 * 128 * 32 * 2 + 512);
    EXPECT_EQ(image_bytes(&p, "fact-split-image-v1:f16s:p2:r64:k32:sw64"), 0u);
    EXPECT_NE(image_can(&p, "fact-split-image-v1:f16s:p2:r64:k32:sw64"), 0);
    EXPECT_NE(std::string(last_error()).find("writes no image in format"), std::string::npos) << last_error();
    EXPECT_NE(run_image(&p, f16x3.c_str(), reinterpret_cast<char*>(addr(7)) + 8, nullptr), 0);  // refused before launch
    EXPECT_NE(std::string(last_error()).find("256-byte aligned"), std::string::npos) << last_error();
  }
  // minGPT: (B, H, T, d) = (4, 8, 512, 96) on a packed qkv [B, T, 3C], merged-heads output.
  auto mingpt_problem = [&] {
    FactAttentionProblem p{};
    p.batch = 4, p.heads = 8, p.seq_q = p.seq_k = 512, p.head_dim = p.head_dim_v = 96, p.scale = 0.1f, p.causal = 1;
    p.q = addr(1), p.k = reinterpret_cast<const char*>(addr(1)) + 768 * 4;
    p.v = reinterpret_cast<const char*>(addr(1)) + 1536 * 4;
    p.q_stride_batch = p.k_stride_batch = p.v_stride_batch = 512 * 2304;
    p.q_stride_head = p.k_stride_head = p.v_stride_head = 96;
    p.q_stride_seq = p.k_stride_seq = p.v_stride_seq = 2304;
    p.o = addr(64), p.o_stride_batch = 512 * 768, p.o_stride_head = 96, p.o_stride_seq = 768;
    return p;
  };
  for (size_t lib_index : {size_t(1), size_t(3)}) {
    const bool sm90 = lib_index == 3;
    SCOPED_TRACE(results[lib_index].name);
    Library lib(results[lib_index].library);
    ASSERT_NE(lib.handle, nullptr) << ::dlerror();
    ASSERT_NO_FATAL_FAILURE(expect_library_identity(lib, sm90 ? att90.name() : att.name()));
    auto can = lib.fn<int(const FactAttentionProblem*)>("fact_attention_can_implement");
    auto workspace = lib.fn<size_t(const FactAttentionProblem*)>("fact_attention_workspace_size");
    auto run = lib.fn<int(const FactAttentionProblem*, void*, size_t, void*)>("fact_attention_run");
    auto last_error = lib.fn<const char*()>("fact_last_error");
    ASSERT_TRUE(can && workspace && run && last_error) << "attention library lacks an ABI symbol";
    EXPECT_NE(can(nullptr), 0);
    FactAttentionProblem p = mingpt_problem();
    EXPECT_EQ(can(&p), 0) << last_error();
    EXPECT_EQ(workspace(&p), 0u);
    p.o_stride_head = 512 * 96;  // [B, H, T, d]: the sm80 kernel writes merged heads only
    if (sm90) {
      EXPECT_EQ(can(&p), 0) << last_error();
    } else {
      EXPECT_NE(can(&p), 0);
      EXPECT_NE(std::string(last_error()).find("are not that layout"), std::string::npos) << last_error();
    }
    p.o_stride_head = 96, p.head_dim = 160;
    EXPECT_NE(can(&p), 0);
    EXPECT_NE(std::string(last_error()).find(sm90 ? "exceed this variant's head dim 96" : "kMaxK 128"),
              std::string::npos)
        << last_error();
    p.head_dim = 96, p.k = reinterpret_cast<const char*>(p.k) + 4;
    EXPECT_NE(can(&p), 0);
    EXPECT_NE(std::string(last_error()).find("k pointer or strides are not aligned"), std::string::npos)
        << last_error();
    if (sm90) {
      p = mingpt_problem();
      p.head_dim_v = 90;
      EXPECT_NE(can(&p), 0);
      EXPECT_NE(std::string(last_error()).find("are not multiples of 4"), std::string::npos) << last_error();
    }
  }
}

}  // namespace
}  // namespace fact

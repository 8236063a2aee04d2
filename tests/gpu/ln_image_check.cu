// Standalone check of a LayerNorm library writing a GEMM's pre-split A operand
// (include/fact/kernel_abi.h ABI 4, fact_layernorm_run_image; templates/layernorm_image.cuh)
// against the same LayerNorm writing fp32 y and the GEMM splitting y itself.
//
//   ln_image_check --ln LN.so --lib GEMM.so --cols C [--residual none|res|res_sum]
//                  [--b row|col] [--ep none|bias] [--shape ROWS,N,0,0]... [--time] [--reps N]
//
// LN: y = LayerNorm(x [+ r]) over C columns (weight and bias N(0,1), then absent); GEMM:
// Y = y . W (+ bias with --ep bias) with W in the library's B layout (--b), N columns. For every shape, and
// for U[0,1) and N(0,1) x (the N(0,1) one scaled by 1e3 and offset, to move the block
// exponents):
//  - the LN library writes the GEMM's image format and both agree on its size;
//  - unfused: LN writes y (NaN-poisoned first), the GEMM reads it -> Y0;
//  - fused: the image is poisoned (0xFF bytes: NaN parts), LN writes it, the GEMM reads it
//    with a = null -> Y1 (NaN-poisoned first); a res_sum LN's sum must equal the unfused
//    one bit for bit;
//  - Y1 must equal Y0 bit for bit over all elements, with no non-finite element (a part
//    the writer missed stays NaN and reaches Y through the zero rows of B's image).
// Refusals: a misaligned image, a format the library does not write. With --time: LN
// alone and LN image alone, the unfused and the fused pair; CUDA events, 256 MB L2 flush
// before every rep, median and mean of --reps (>= 50) runs, three rounds alternating; also
// the GEMM alone from y and from the image.
// Exit 1 on a failed check, 2 on a usage or CUDA error.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "fact/kernel_abi.h"

namespace {

using namespace fact_check;

struct LnLib {
  const char* (*name)();
  int (*abi)();
  int (*can)(const FactLayerNormProblem*);
  int (*run)(const FactLayerNormProblem*, void*);
  const char* (*formats)();
  size_t (*image_bytes)(const FactLayerNormProblem*, const char*);
  int (*image_can)(const FactLayerNormProblem*, const char*);
  int (*run_image)(const FactLayerNormProblem*, const char*, void*, void*);
  const char* (*err)();
};

LnLib open_ln(const std::string& path) {
  void* h = open_or_throw(path);
  LnLib L;
  bind(h, "fact_variant_name", L.name);
  bind(h, "fact_abi_version", L.abi);
  bind(h, "fact_layernorm_can_implement", L.can);
  bind(h, "fact_layernorm_run", L.run);
  bind(h, "fact_layernorm_image_formats", L.formats);
  bind(h, "fact_layernorm_image_bytes", L.image_bytes);
  bind(h, "fact_layernorm_image_can_implement", L.image_can);
  bind(h, "fact_layernorm_run_image", L.run_image);
  bind(h, "fact_last_error", L.err);
  if (L.abi() != FACT_KERNEL_ABI_VERSION) throw std::runtime_error("ABI version mismatch");
  return L;
}

struct Opts {
  std::string ln, lib, residual = "none";
  int64_t cols = 0;
  bool b_row = false, bias = true, time = false;
  int reps = 50;
  std::vector<std::array<int64_t, 4>> shapes;
};

__global__ void affine(float* p, size_t n, float scale, float offset) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = p[i] * scale + offset;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b, size_t& differ, size_t& nonfinite,
               size_t& first) {
  differ = nonfinite = 0;
  first = a.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      if (first == a.size()) first = i;
      ++differ;
    }
    if (!std::isfinite(b[i])) ++nonfinite;
  }
  return differ == 0 && nonfinite == 0;
}

std::vector<float> to_host(const float* d, size_t n, cudaStream_t stream) {
  std::vector<float> h(n);
  CUDA_CHECK(cudaMemcpyAsync(h.data(), d, sizeof(float) * n, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return h;
}

int run_all(const Opts& o) {
  const LnLib L = open_ln(o.ln);
  const Lib G = open_library(o.lib);
  const std::string format = G.image_format();
  const CheckDevice dev;
  std::printf("LN %s, GEMM %s on %s; GEMM reads '%s'; LN writes '%s'\n", L.name(), G.name(), dev.prop.name,
              format.c_str(), L.formats());
  if (format.empty() || std::string(";") .append(L.formats()).append(";").find(";" + format + ";") == std::string::npos) {
    std::printf("FAIL: the LayerNorm library does not write the GEMM's image format\n");
    return 1;
  }
  const bool residual = o.residual != "none", writes_sum = o.residual == "res_sum";
  cudaStream_t stream = dev.stream;
  const int grid = dev.grid;
  int failures = 0;
  uint64_t seed = 20261126;
  const int64_t c = o.cols;

  for (const auto& sh : o.shapes) {
    const int64_t rows = sh[0], n = sh[1];
    float *X, *R = nullptr, *S0 = nullptr, *S1 = nullptr, *Wn, *Bn, *Y, *W, *Bias, *Y0, *Y1;
    CUDA_CHECK(cudaMalloc(&X, sizeof(float) * rows * c));
    if (residual) CUDA_CHECK(cudaMalloc(&R, sizeof(float) * rows * c));
    if (writes_sum) {
      CUDA_CHECK(cudaMalloc(&S0, sizeof(float) * rows * c));
      CUDA_CHECK(cudaMalloc(&S1, sizeof(float) * rows * c));
    }
    CUDA_CHECK(cudaMalloc(&Wn, sizeof(float) * c));
    CUDA_CHECK(cudaMalloc(&Bn, sizeof(float) * c));
    CUDA_CHECK(cudaMalloc(&Y, sizeof(float) * rows * c));
    CUDA_CHECK(cudaMalloc(&W, sizeof(float) * c * n));
    CUDA_CHECK(cudaMalloc(&Bias, sizeof(float) * n));
    CUDA_CHECK(cudaMalloc(&Y0, sizeof(float) * rows * n));
    CUDA_CHECK(cudaMalloc(&Y1, sizeof(float) * rows * n));

    FactLayerNormProblem ln{};
    ln.rows = rows, ln.cols = c, ln.eps = 1e-5f;
    ln.x = X, ln.x_row_stride = c;
    ln.residual = R, ln.residual_row_stride = residual ? c : 0;
    ln.sum = S0, ln.sum_row_stride = writes_sum ? c : 0;
    ln.y = Y, ln.y_row_stride = c;
    FactGemmProblem gp{};
    gp.batch = 1, gp.m = rows, gp.n = n, gp.k = c;
    gp.a = Y, gp.ld_a = c;
    gp.b = W, gp.ld_b = o.b_row ? n : c;
    gp.d = Y0, gp.ld_d = n;
    gp.e = o.bias ? Bias : nullptr, gp.alpha = 1.0f, gp.beta = o.bias ? 1.0f : 0.0f;
    FactLayerNormProblem ln_image = ln;
    ln_image.y = nullptr, ln_image.y_row_stride = 0, ln_image.sum = S1;
    FactGemmProblem gp_image = gp;
    gp_image.a = nullptr, gp_image.d = Y1;

    const size_t image_bytes = G.image_bytes(&gp, 0);
    if (image_bytes == 0 || image_bytes != L.image_bytes(&ln_image, format.c_str())) {
      std::printf("FAIL rows=%lld: image sizes differ (GEMM's A %zu, LN's %zu)\n", (long long)rows, image_bytes,
                  L.image_bytes(&ln_image, format.c_str()));
      ++failures;
      continue;
    }
    void* image;
    CUDA_CHECK(cudaMalloc(&image, image_bytes));
    gp_image.a_image = image;
    if (L.can(&ln) != 0) throw std::runtime_error(std::string("LN can_implement: ") + L.err());
    if (L.image_can(&ln_image, format.c_str()) != 0 || G.can(&gp) != 0 || G.can(&gp_image) != 0) {
      std::printf("FAIL rows=%lld: a can_implement refused: %s / %s\n", (long long)rows, L.err(), G.err());
      ++failures;
      continue;
    }
    {  // refusals
      const bool misaligned = L.run_image(&ln_image, format.c_str(), static_cast<char*>(image) + 16, stream) != 0;
      const bool unknown = L.image_can(&ln_image, "fact-split-image-v1:f16s:p2:r64:k32:sw64") != 0;
      std::printf("REFUSE misaligned image: %s; unknown format: %s (%s)\n", misaligned ? "refused" : "ACCEPTED",
                  unknown ? "refused" : "ACCEPTED", L.err());
      failures += !misaligned + !unknown;
    }
    const size_t ws_bytes = std::max(G.ws(&gp), G.ws(&gp_image));
    void* ws = nullptr;
    if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
    auto ln_run = [&](const FactLayerNormProblem& p) {
      if (L.run(&p, stream) != 0) throw std::runtime_error(std::string("LN run: ") + L.err());
    };
    auto ln_run_image = [&](const FactLayerNormProblem& p) {
      if (L.run_image(&p, format.c_str(), image, stream) != 0) throw std::runtime_error(std::string("LN run_image: ") + L.err());
    };
    auto gemm_run = [&](const FactGemmProblem& p) {
      if (G.run(&p, ws, ws_bytes, stream) != 0) throw std::runtime_error(std::string("GEMM run: ") + G.err());
    };

    for (int weights = 1; weights >= 0; --weights) {
      for (int normal = 0; normal < 2; ++normal) {
        ++seed;
        fill<<<grid, 256, 0, stream>>>(X, size_t(rows * c), seed * 7 + 0, normal);
        if (normal) affine<<<grid, 256, 0, stream>>>(X, size_t(rows * c), 1e3f, 5e2f);
        if (R) fill<<<grid, 256, 0, stream>>>(R, size_t(rows * c), seed * 7 + 1, normal);
        fill<<<grid, 256, 0, stream>>>(Wn, size_t(c), seed * 7 + 2, 1);
        fill<<<grid, 256, 0, stream>>>(Bn, size_t(c), seed * 7 + 3, 1);
        fill<<<grid, 256, 0, stream>>>(W, size_t(c * n), seed * 7 + 4, normal);
        fill<<<grid, 256, 0, stream>>>(Bias, size_t(n), seed * 7 + 5, normal);
        fill_nan<<<grid, 256, 0, stream>>>(Y, size_t(rows * c));
        fill_nan<<<grid, 256, 0, stream>>>(Y0, size_t(rows * n));
        fill_nan<<<grid, 256, 0, stream>>>(Y1, size_t(rows * n));
        if (S0) fill_nan<<<grid, 256, 0, stream>>>(S0, size_t(rows * c));
        if (S1) fill_nan<<<grid, 256, 0, stream>>>(S1, size_t(rows * c));
        CUDA_CHECK(cudaMemsetAsync(image, 0xff, image_bytes, stream));
        CUDA_CHECK(cudaGetLastError());
        ln.weight = ln_image.weight = weights ? Wn : nullptr;
        ln.bias = ln_image.bias = weights ? Bn : nullptr;
        ln_run(ln);
        gemm_run(gp);
        ln_run_image(ln_image);
        gemm_run(gp_image);
        CUDA_CHECK(cudaGetLastError());
        size_t differ, nonfinite, first;
        const std::vector<float> y0 = to_host(Y0, size_t(rows * n), stream), y1 = to_host(Y1, y0.size(), stream);
        bool ok = bit_equal(y0, y1, differ, nonfinite, first);
        std::printf("CHECK rows=%lld cols=%lld n=%lld %-7s %s elements=%zu bit-differ=%zu nonfinite=%zu%s | %s\n",
                    (long long)rows, (long long)c, (long long)n, normal ? "normal" : "uniform",
                    weights ? "weight+bias" : "no-affine", y0.size(), differ, nonfinite,
                    differ ? (" first at row " + std::to_string(first / n) + " col " + std::to_string(first % n) +
                              ": " + std::to_string(y0[first]) + " vs " + std::to_string(y1[first]))
                                 .c_str()
                           : "",
                    ok ? "OK" : "WRONG");
        failures += !ok;
        if (writes_sum) {
          const std::vector<float> s0 = to_host(S0, size_t(rows * c), stream), s1 = to_host(S1, s0.size(), stream);
          const bool sum_ok = bit_equal(s0, s1, differ, nonfinite, first);
          std::printf("CHECK residual sum bit-differ=%zu nonfinite=%zu | %s\n", differ, nonfinite,
                      sum_ok ? "OK" : "WRONG");
          failures += !sum_ok;
        }
      }
    }

    if (o.time) {
      ln.weight = ln_image.weight = Wn;
      ln.bias = ln_image.bias = Bn;
      auto time_it = [&](auto&& fn) { return dev.time(fn, o.reps); };
      for (int round = 0; round < 3; ++round) {
        const auto ln_alone = time_it([&] { ln_run(ln); });
        const auto image_alone = time_it([&] { ln_run_image(ln_image); });
        const auto plain = time_it([&] {
          ln_run(ln);
          gemm_run(gp);
        });
        const auto fused = time_it([&] {
          ln_run_image(ln_image);
          gemm_run(gp_image);
        });
        const auto gemm_alone = time_it([&] { gemm_run(gp); });
        const auto gemm_image = time_it([&] { gemm_run(gp_image); });
        std::printf("TIME rows=%lld cols=%lld n=%lld round %d: LN %.4f / %.4f ms, LN image %.4f / %.4f ms, "
                    "GEMM from y %.4f / %.4f ms, GEMM from the image %.4f / %.4f ms, "
                    "LN + GEMM %.4f / %.4f ms, LN image + GEMM %.4f / %.4f ms (median / mean)\n",
                    (long long)rows, (long long)c, (long long)n, round, ln_alone.first, ln_alone.second,
                    image_alone.first, image_alone.second, gemm_alone.first, gemm_alone.second, gemm_image.first,
                    gemm_image.second, plain.first, plain.second, fused.first, fused.second);
      }
    }
    for (void* p : {static_cast<void*>(X), static_cast<void*>(R), static_cast<void*>(S0), static_cast<void*>(S1),
                    static_cast<void*>(Wn), static_cast<void*>(Bn), static_cast<void*>(Y), static_cast<void*>(W),
                    static_cast<void*>(Bias), static_cast<void*>(Y0), static_cast<void*>(Y1), image, ws})
      if (p) CUDA_CHECK(cudaFree(p));
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"LayerNorm operand-image check (ABI 4)"};
  Opts o;
  app.add_option("--ln", o.ln, "LayerNorm library (.so)")->required()->check(CLI::ExistingFile);
  app.add_option("--cols", o.cols, "the LayerNorm library's row length")->required()->check(CLI::PositiveNumber);
  app.add_option("--residual", o.residual, "the LayerNorm library's residual mode")
      ->check(CLI::IsMember({"none", "res", "res_sum"}));
  std::string b = "col", ep = "bias";
  app.add_option("--b", b, "the GEMM library's B layout")->check(CLI::IsMember({"row", "col"}));
  app.add_option("--ep", ep, "the GEMM library's epilogue")->check(CLI::IsMember({"none", "bias"}));
  add_common_options(app, o.lib, o.shapes, o.time, o.reps, "ROWS,N,0,0");
  if (int status = parse_or_exit(app, argc, argv)) return status < 0 ? 0 : status;
  o.b_row = b == "row";
  o.bias = ep == "bias";
  return run_reporting("ln_image_check", [&] { return run_all(o); });
}

// Standalone check of the operand hand-off between two FACT GEMM kernel libraries
// (include/fact/kernel_abi.h, d_image / a_image; templates/split_gemm_pre_sm90.cuh):
// GEMM P writes its D as the pre-split A image of GEMM Q, Q reads it.
//
//   handoff_check --lib P.so [--lib2 Q.so] --b row|col --ep none|bias [--batch B]
//                 [--shape M,N1,K1,N2]... [--time] [--reps N]
//
// P: H = epilogue(X . W1) with X M x K1 (row-major), W1 K1 x N1; Q: Y = epilogue(H . W2)
// with W2 N1 x N2 (both B operands in --b layout, both with the --ep epilogue; Q's
// library defaults to P's); with --batch, B entries of each (W1 shared by them). For every shape and for U[0,1) and N(0,1) inputs:
//  - both libraries name the same non-empty image format, and P's D-image size equals
//    Q's A-image size;
//  - unfused: P writes H (poisoned with NaN first), Q reads it -> Y0;
//  - fused: the image is poisoned (0xFF bytes: fp16 / bf16 NaN), P writes it with d = null,
//    Q reads it with a = null -> Y1 (poisoned with NaN first);
//  - Y1 must equal Y0 bit for bit over all M x N2 elements (the image is by contract
//    exactly what Q's own pre-pass makes of H), with no non-finite element.
// Refusals checked once: a misaligned image and a problem whose K is split must be
// rejected by can_implement. With --time: the unfused and the fused pair, CUDA events,
// 256 MB L2 flush before every rep, median and mean of --reps (>= 50) runs.
// Exit 1 on a failed check, 2 on a usage or CUDA error.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "fact/kernel_abi.h"

namespace {

using namespace fact_check;

struct Opts {
  std::string lib, lib2;
  bool b_row = false;
  int ep = FACT_EPILOGUE_NONE, reps = 50;
  int64_t batch = 1;
  bool time = false;
  std::vector<std::array<int64_t, 4>> shapes;
};

// A GEMM problem with A row-major (m x k, ld k), B in `b_row` layout, D row-major (ld n);
// batch > 1: dense batch entries of A and D, and of B unless `shared_b` (one B for all).
FactGemmProblem problem(int64_t m, int64_t n, int64_t k, bool b_row, int ep, const float* a, const float* b,
                        float* d, const float* bias, int64_t batch = 1, bool shared_b = false) {
  FactGemmProblem pr{};
  pr.batch = batch; pr.m = m; pr.n = n; pr.k = k;
  pr.a = a; pr.ld_a = k; pr.batch_stride_a = batch > 1 ? m * k : 0;
  pr.b = b; pr.ld_b = b_row ? n : k; pr.batch_stride_b = batch > 1 && !shared_b ? k * n : 0;
  pr.d = d; pr.ld_d = n; pr.batch_stride_d = batch > 1 ? m * n : 0;
  pr.e = ep == FACT_EPILOGUE_BIAS ? bias : nullptr;
  pr.alpha = ep == FACT_EPILOGUE_NONE ? 1.0f : 0.75f;
  pr.beta = ep == FACT_EPILOGUE_NONE ? 0.0f : 0.5f;
  return pr;
}

void run(const Lib& L, const FactGemmProblem& pr, void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (L.run(&pr, ws, ws_bytes, stream) != 0) throw std::runtime_error(std::string(L.name()) + ": " + L.err());
  CUDA_CHECK(cudaGetLastError());
}

int run_all(const Opts& o) {
  const Lib P = open_library(o.lib), Q = open_library(o.lib2.empty() ? o.lib : o.lib2);
  const CheckDevice dev;
  std::printf("P %s, Q %s on %s; image format '%s' / '%s'\n", P.name(), Q.name(), dev.prop.name, P.image_format(),
              Q.image_format());
  int failures = 0;
  if (!*P.image_format() || std::strcmp(P.image_format(), Q.image_format()) != 0) {
    std::printf("FAIL: the libraries do not share an image format\n");
    return 1;
  }
  cudaStream_t stream = dev.stream;
  const int grid = dev.grid;

  // Refusals: a misaligned image, and K split over CTAs (few output tiles, long K).
  {
    FactGemmProblem pr = problem(128, 128, 65536, o.b_row, o.ep, reinterpret_cast<float*>(256),
                                 reinterpret_cast<float*>(512), nullptr, reinterpret_cast<float*>(768));
    pr.d_image = reinterpret_cast<void*>(1 << 20);
    const bool split_refused = P.can(&pr) != 0;
    std::printf("REFUSE split-K D image: %s (%s)\n", split_refused ? "refused" : "ACCEPTED", P.err());
    pr = problem(4096, 4096, 4096, o.b_row, o.ep, reinterpret_cast<float*>(256), reinterpret_cast<float*>(512),
                 nullptr, reinterpret_cast<float*>(768));
    pr.d_image = reinterpret_cast<void*>((1 << 20) + 16);
    const bool misaligned_refused = P.can(&pr) != 0;
    std::printf("REFUSE misaligned D image: %s (%s)\n", misaligned_refused ? "refused" : "ACCEPTED", P.err());
    failures += !split_refused + !misaligned_refused;
  }

  uint64_t seed = 20261126;
  for (const auto& sh : o.shapes) {
    const int64_t m = sh[0], n1 = sh[1], k1 = sh[2], n2 = sh[3], bt = o.batch;
    float *X, *W1, *W2, *B1 = nullptr, *B2 = nullptr, *H, *Y0, *Y1;
    CUDA_CHECK(cudaMalloc(&X, sizeof(float) * bt * m * k1));
    CUDA_CHECK(cudaMalloc(&W1, sizeof(float) * k1 * n1));  // shared by the batch entries
    CUDA_CHECK(cudaMalloc(&W2, sizeof(float) * bt * n1 * n2));
    CUDA_CHECK(cudaMalloc(&H, sizeof(float) * bt * m * n1));
    CUDA_CHECK(cudaMalloc(&Y0, sizeof(float) * bt * m * n2));
    CUDA_CHECK(cudaMalloc(&Y1, sizeof(float) * bt * m * n2));
    if (o.ep == FACT_EPILOGUE_BIAS) {
      CUDA_CHECK(cudaMalloc(&B1, sizeof(float) * n1));
      CUDA_CHECK(cudaMalloc(&B2, sizeof(float) * n2));
    }
    const FactGemmProblem p_plain = problem(m, n1, k1, o.b_row, o.ep, X, W1, H, B1, bt, /*shared_b=*/true);
    const FactGemmProblem q_plain = problem(m, n2, n1, o.b_row, o.ep, H, W2, Y0, B2, bt);
    const size_t image_bytes = Q.image_bytes(&q_plain, 0);
    if (image_bytes == 0 || image_bytes != P.image_bytes(&p_plain, 1)) {
      std::printf("FAIL %lldx%lldx%lldx%lld: image sizes differ (Q's A %zu, P's D %zu)\n", (long long)m,
                  (long long)n1, (long long)k1, (long long)n2, image_bytes, P.image_bytes(&p_plain, 1));
      ++failures;
      continue;
    }
    void* image;
    CUDA_CHECK(cudaMalloc(&image, image_bytes));
    FactGemmProblem p_image = p_plain, q_image = q_plain;
    p_image.d = nullptr;
    p_image.d_image = image;
    q_image.a = nullptr;
    q_image.a_image = image;
    q_image.d = Y1;
    for (const FactGemmProblem* pr : {&p_plain, &q_plain}) {
      if (P.can(pr) != 0) throw std::runtime_error(std::string("can_implement refused a plain problem: ") + P.err());
    }
    if (P.can(&p_image) != 0 || Q.can(&q_image) != 0) {
      std::printf("FAIL %lldx%lldx%lldx%lld: can_implement refused the hand-off: %s / %s\n", (long long)m,
                  (long long)n1, (long long)k1, (long long)n2, P.err(), Q.err());
      ++failures;
      CUDA_CHECK(cudaFree(image));
      continue;
    }
    size_t ws_bytes = 0;
    ws_bytes = std::max({P.ws(&p_plain), P.ws(&p_image), Q.ws(&q_plain), Q.ws(&q_image)});
    void* ws = nullptr;
    if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));

    for (int normal = 0; normal < 2; ++normal) {
      ++seed;
      fill<<<grid, 256, 0, stream>>>(X, size_t(bt * m * k1), seed * 5 + 0, normal);
      fill<<<grid, 256, 0, stream>>>(W1, size_t(k1 * n1), seed * 5 + 1, normal);
      fill<<<grid, 256, 0, stream>>>(W2, size_t(bt * n1 * n2), seed * 5 + 2, normal);
      if (B1) fill<<<grid, 256, 0, stream>>>(B1, size_t(n1), seed * 5 + 3, normal);
      if (B2) fill<<<grid, 256, 0, stream>>>(B2, size_t(n2), seed * 5 + 4, normal);
      fill_nan<<<grid, 256, 0, stream>>>(H, size_t(bt * m * n1));
      fill_nan<<<grid, 256, 0, stream>>>(Y0, size_t(bt * m * n2));
      fill_nan<<<grid, 256, 0, stream>>>(Y1, size_t(bt * m * n2));
      CUDA_CHECK(cudaMemsetAsync(image, 0xff, image_bytes, stream));
      CUDA_CHECK(cudaGetLastError());
      run(P, p_plain, ws, ws_bytes, stream);
      run(Q, q_plain, ws, ws_bytes, stream);
      run(P, p_image, ws, ws_bytes, stream);
      run(Q, q_image, ws, ws_bytes, stream);
      std::vector<float> y0(size_t(bt * m * n2)), y1(size_t(bt * m * n2));
      CUDA_CHECK(cudaMemcpyAsync(y0.data(), Y0, sizeof(float) * y0.size(), cudaMemcpyDeviceToHost, stream));
      CUDA_CHECK(cudaMemcpyAsync(y1.data(), Y1, sizeof(float) * y1.size(), cudaMemcpyDeviceToHost, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
      size_t differ = 0, nonfinite = 0, first = y0.size();
      for (size_t i = 0; i < y0.size(); ++i) {
        if (std::memcmp(&y0[i], &y1[i], sizeof(float)) != 0) {
          if (first == y0.size()) first = i;
          ++differ;
        }
        if (!std::isfinite(y1[i])) ++nonfinite;
      }
      const bool ok = differ == 0 && nonfinite == 0;
      std::printf("CHECK b=%lld m=%lld n1=%lld k1=%lld n2=%lld %-7s elements=%zu bit-differ=%zu nonfinite=%zu%s | %s\n",
                  (long long)bt, (long long)m, (long long)n1, (long long)k1, (long long)n2,
                  normal ? "normal" : "uniform",
                  y0.size(), differ, nonfinite,
                  differ ? (" first at stacked row " + std::to_string(first / n2) + " col " + std::to_string(first % n2) +
                            ": " + std::to_string(y0[first]) + " vs " + std::to_string(y1[first]))
                               .c_str()
                         : "",
                  ok ? "OK" : "WRONG");
      failures += !ok;
    }

    if (o.time) {
      auto time_it = [&](auto&& fn) { return dev.time(fn, o.reps); };
      // Alternating twice, so that drift between the two measurements shows.
      for (int round = 0; round < 2; ++round) {
        auto plain = time_it([&] {
          run(P, p_plain, ws, ws_bytes, stream);
          run(Q, q_plain, ws, ws_bytes, stream);
        });
        auto fused = time_it([&] {
          run(P, p_image, ws, ws_bytes, stream);
          run(Q, q_image, ws, ws_bytes, stream);
        });
        auto p_alone = time_it([&] { run(P, p_plain, ws, ws_bytes, stream); });
        auto p_img = time_it([&] { run(P, p_image, ws, ws_bytes, stream); });
        std::printf("TIME m=%lld n1=%lld k1=%lld n2=%lld | pair: unfused %.4f ms (mean %.4f), hand-off %.4f ms "
                    "(mean %.4f), %.1f%% | P alone: D %.4f, D image %.4f\n",
                    (long long)m, (long long)n1, (long long)k1, (long long)n2, plain.first, plain.second,
                    fused.first, fused.second, 100.0 * (fused.first - plain.first) / plain.first, p_alone.first,
                    p_img.first);
      }
    }
    for (void* ptr : {static_cast<void*>(X), static_cast<void*>(W1), static_cast<void*>(W2), static_cast<void*>(H),
                      static_cast<void*>(Y0), static_cast<void*>(Y1), static_cast<void*>(B1), static_cast<void*>(B2),
                      image, ws})
      if (ptr) CUDA_CHECK(cudaFree(ptr));
  }
  std::printf("RESULT hand-off %s -> %s: %s (%d failing checks)\n", P.name(), Q.name(), failures ? "FAIL" : "PASS",
              failures);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  CLI::App app{"handoff_check: operand hand-off (D image -> A image) between two FACT GEMM libraries"};
  add_common_options(app, o.lib, o.shapes, o.time, o.reps, "M,N1,K1,N2");
  std::string b = "col", ep = "none";
  app.add_option("--lib2", o.lib2, "the consumer's library (default: --lib)")->check(CLI::ExistingFile);
  app.add_option("--b", b, "B layout of both GEMMs")->check(CLI::IsMember({"row", "col"}));
  app.add_option("--ep", ep, "epilogue of both GEMMs")->check(CLI::IsMember({"none", "bias"}));
  app.add_option("--batch", o.batch, "batch entries (P shares its B over them, Q does not)")->check(CLI::PositiveNumber);
  if (int rc = parse_or_exit(app, argc, argv)) return rc < 0 ? 0 : rc;
  o.b_row = b == "row";
  o.ep = ep == "bias" ? FACT_EPILOGUE_BIAS : FACT_EPILOGUE_NONE;
  return run_reporting("handoff_check", [&] { return run_all(o); });
}

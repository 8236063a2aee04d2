// Standalone correctness and timing check for FACT kernel libraries (C ABI,
// include/fact/kernel_abi.h), written for templates/split_gemm_sm90.cuh but
// usable with any fp32 GEMM variant library.
//
//   split_gemm_check --lib V.so --a row|col --b row|col --ep none|bias|c --terms T
//                    [--shape B,M,N,K]... [--time] [--reps N] [--require-bar]
//                    [--tolerance 1e-4|1e-2] [--pad P] [--offset E]
//
// For every shape and for U[0,1) and N(0,1) inputs (fresh seed per shape and
// distribution): poisons D with NaN, runs the library, counts non-finite
// outputs over the whole D, and compares sampled rows x columns (all of them
// when m, n <= 512; 64 x 64 of up to 4 batch entries otherwise) with an fp64
// cuBLAS reference built from gathered fp64 copies. cuBLAS SGEMM (eager fp32)
// is scored on the same elements. Reported: fail@1e-4 (|C-ref| > 1e-4 +
// 1e-4|ref|), max abs error, relative Frobenius error, and DESIGN.md's "as
// accurate as eager" bar (fail <= eager + 0.001 and maxabs <= 2x eager), and
// fail@1e-2 with its bar (fail@1e-2 <= eager's + 0.001).
// Leading dimensions are padded by --pad elements (default 4 where m, n <= 512, else 0)
// and the operands start --offset elements into their allocations: --pad 1 --offset 1
// gives rows and base pointers that are not 16-byte aligned.
// Exit status 1 on a correctness failure: a non-finite/unwritten output, or a
// relative Frobenius error over the bound for the mode (Terms 1: 2e-2,
// 3: 2e-4, 6: 2e-5; a wrong index or race gives O(1)). With --require-bar a
// missed accuracy bar at --tolerance (default 1e-4) also fails. Exit 2 on a usage or CUDA/cuBLAS error.
// With --time: CUDA-event timing with a 256 MB L2 flush before every rep,
// median and mean of --reps (>= 50) runs, against cublasSgemm and
// cublasGemmEx(CUBLAS_COMPUTE_32F_FAST_TF32) in the same process.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "fact/kernel_abi.h"

namespace {

using namespace fact_check;

// Counts non-finite elements of the logical m x n (ld, batch stride) output.
__global__ void count_bad(const float* d, int64_t batch, int64_t m, int64_t n, int64_t ld, int64_t bs,
                          unsigned long long* bad) {
  size_t total = size_t(batch) * m * n;
  unsigned long long local = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    int64_t b = i / (m * n), r = (i / n) % m, c = i % n;
    if (!isfinite(d[b * bs + r * ld + c])) ++local;
  }
  if (local) atomicAdd(bad, local);
}
// out[i*K + k] = A(rows[i], k) as fp64 (A row-major: m*ld+k, else k*ld+m).
__global__ void gather_a(const float* a, int64_t ld, bool row, const int* rows, int nr, int64_t k, double* out) {
  size_t total = size_t(nr) * k;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    int64_t r = rows[i / k], kk = i % k;
    out[i] = row ? a[r * ld + kk] : a[kk * ld + r];
  }
}
// out[kk*nc + j] = B(kk, cols[j]) as fp64 (B row-major: k*ld+n, else n*ld+k).
__global__ void gather_b(const float* b, int64_t ld, bool row, const int* cols, int nc, int64_t k, double* out) {
  size_t total = size_t(nc) * k;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    int64_t kk = i / nc, c = cols[i % nc];
    out[i] = row ? b[kk * ld + c] : b[c * ld + kk];
  }
}

enum Ep { EP_NONE = 0, EP_BIAS = 1, EP_C = 2 };

struct Opts {
  std::string lib;
  bool a_row = true, b_row = true;
  int ep = EP_NONE, terms = 3, reps = 50;
  bool time = false, require_bar = false;
  double tolerance = 1e-4;
  int pad = -1;     // elements added to every leading dimension (-1: 4 for small shapes, else 0)
  int offset = 0;   // elements by which A, B, D and E start past their 256-byte aligned allocations
  std::vector<std::array<int64_t, 4>> shapes;
};

struct Score {
  double fail = 0, fail2 = 0, maxabs = 0, relf = 0;  // fail: at 1e-4, fail2: at 1e-2
};

Score score(const std::vector<double>& ref, const std::vector<float>& got) {
  Score s;
  double num = 0, den = 0;
  size_t fails = 0, fails2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double e = std::fabs(double(got[i]) - ref[i]);
    if (!std::isfinite(got[i]) || e > 1e-4 + 1e-4 * std::fabs(ref[i])) ++fails;
    if (!std::isfinite(got[i]) || e > 1e-2 + 1e-2 * std::fabs(ref[i])) ++fails2;
    if (!std::isfinite(got[i])) e = INFINITY;
    s.maxabs = std::max(s.maxabs, e);
    num += e * e;
    den += ref[i] * ref[i];
  }
  s.fail = ref.empty() ? 0 : double(fails) / ref.size();
  s.fail2 = ref.empty() ? 0 : double(fails2) / ref.size();
  s.relf = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return s;
}

int run_all(const Opts& o) {
  const Lib L = open_library(o.lib);
  const CheckDevice dev;
  const cudaDeviceProp& prop = dev.prop;
  std::printf("variant %s on %s (%d SMs)\n", L.name(), prop.name, prop.multiProcessorCount);

  cublasHandle_t cb;
  CUBLAS_CHECK(cublasCreate(&cb));
  cudaStream_t stream = dev.stream;
  CUBLAS_CHECK(cublasSetStream(cb, stream));
  unsigned long long* bad_d;
  CUDA_CHECK(cudaMalloc(&bad_d, sizeof(unsigned long long)));

  int failures = 0;
  uint64_t seed = 20261125;
  for (const auto& sh : o.shapes) {
    const int64_t batch = sh[0], m = sh[1], n = sh[2], k = sh[3];
    const bool small = m <= 512 && n <= 512;
    // Small problems get padded leading dimensions to exercise ld handling (--pad: any
    // padding, e.g. 1 for rows that are not 16-byte aligned).
    const int64_t pad = o.pad >= 0 ? o.pad : small ? 4 : 0;
    const int64_t ld_a = (o.a_row ? k : m) + pad, ld_b = (o.b_row ? n : k) + pad, ld_d = n + pad;
    const int64_t rows_a = o.a_row ? m : k, rows_b = o.b_row ? k : n;
    const int64_t bs_a = rows_a * ld_a, bs_b = rows_b * ld_b, bs_d = m * ld_d;
    const int64_t ld_e = o.ep == EP_C ? n + pad : 0;
    const int64_t bs_e = o.ep == EP_C ? m * ld_e : (o.ep == EP_BIAS ? n : 0);
    const float alpha = o.ep == EP_NONE ? 1.0f : 0.75f, beta = o.ep == EP_NONE ? 0.0f : 0.5f;
    float *A, *B, *D, *E = nullptr, *S;
    float *A0, *B0, *D0, *E0 = nullptr;  // the allocations; A = A0 + offset etc. (--offset)
    CUDA_CHECK(cudaMalloc(&A0, sizeof(float) * (batch * bs_a + o.offset)));
    CUDA_CHECK(cudaMalloc(&B0, sizeof(float) * (batch * bs_b + o.offset)));
    CUDA_CHECK(cudaMalloc(&D0, sizeof(float) * (batch * bs_d + o.offset)));
    CUDA_CHECK(cudaMalloc(&S, sizeof(float) * batch * m * n));  // eager result, dense row-major
    if (o.ep != EP_NONE) CUDA_CHECK(cudaMalloc(&E0, sizeof(float) * (std::max<int64_t>(batch * bs_e, 1) + o.offset)));
    A = A0 + o.offset, B = B0 + o.offset, D = D0 + o.offset, E = E0 ? E0 + o.offset : nullptr;

    FactGemmProblem pr{};
    pr.batch = batch; pr.m = m; pr.n = n; pr.k = k;
    pr.a = A; pr.ld_a = ld_a; pr.batch_stride_a = bs_a;
    pr.b = B; pr.ld_b = ld_b; pr.batch_stride_b = bs_b;
    pr.d = D; pr.ld_d = ld_d; pr.batch_stride_d = bs_d;
    pr.e = E; pr.ld_e = ld_e; pr.batch_stride_e = bs_e;
    pr.alpha = alpha; pr.beta = beta;
    if (L.can(&pr) != 0) {
      std::printf("shape %lldx%lldx%lldx%lld: can_implement refused: %s\n", (long long)batch, (long long)m,
                  (long long)n, (long long)k, L.err());
      ++failures;
      continue;
    }
    size_t ws_bytes = L.ws(&pr);
    void* ws = nullptr;
    if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));

    // Sampled rows/cols and batch entries.
    std::vector<int> rows, cols;
    auto pick = [](int64_t extent, int want, uint64_t s) {
      std::vector<int> v;
      if (extent <= want * 8) {  // all, when small
        for (int64_t i = 0; i < extent; ++i) v.push_back(int(i));
        return v;
      }
      for (int i = 0; i < want; ++i) v.push_back(int((uint64_t(i) * extent) / want + (s * 7919 + i * 104729) % (extent / want)));
      v.back() = int(extent - 1);  // always check the last row/column (tile edge)
      return v;
    };
    rows = small ? pick(m, int(m), 0) : pick(m, 64, seed);
    cols = small ? pick(n, int(n), 0) : pick(n, 64, seed + 1);
    std::vector<int64_t> bsel;
    for (int64_t b : {int64_t(0), batch / 3, (2 * batch) / 3, batch - 1})
      if (std::find(bsel.begin(), bsel.end(), b) == bsel.end()) bsel.push_back(b);
    const int nr = int(rows.size()), nc = int(cols.size());
    int *rows_d, *cols_d;
    double *ga, *gb, *gr;
    CUDA_CHECK(cudaMalloc(&rows_d, sizeof(int) * nr));
    CUDA_CHECK(cudaMalloc(&cols_d, sizeof(int) * nc));
    CUDA_CHECK(cudaMemcpy(rows_d, rows.data(), sizeof(int) * nr, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cols_d, cols.data(), sizeof(int) * nc, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc(&ga, sizeof(double) * nr * k));
    CUDA_CHECK(cudaMalloc(&gb, sizeof(double) * nc * k));
    CUDA_CHECK(cudaMalloc(&gr, sizeof(double) * nr * nc));

    // Eager fp32 / TF32 through cuBLAS (column-major view: D^T = B^T A^T).
    auto cublas_gemm = [&](bool tf32) {
      const float one = 1.0f, zero = 0.0f;
      cublasOperation_t opB = o.b_row ? CUBLAS_OP_N : CUBLAS_OP_T;
      cublasOperation_t opA = o.a_row ? CUBLAS_OP_N : CUBLAS_OP_T;
      CUBLAS_CHECK(cublasGemmStridedBatchedEx(cb, opB, opA, int(n), int(m), int(k), &one, B, CUDA_R_32F,
                                              int(ld_b), bs_b, A, CUDA_R_32F, int(ld_a), bs_a, &zero, S,
                                              CUDA_R_32F, int(n), m * n, int(batch),
                                              tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT));
    };

    for (int normal = 0; normal < 2; ++normal) {
      ++seed;
      const int grid = dev.grid;
      fill<<<grid, 256, 0, stream>>>(A, size_t(batch) * bs_a, seed * 3 + 0, normal);
      fill<<<grid, 256, 0, stream>>>(B, size_t(batch) * bs_b, seed * 3 + 1, normal);
      if (E) fill<<<grid, 256, 0, stream>>>(E, size_t(std::max<int64_t>(batch * bs_e, 1)), seed * 3 + 2, normal);
      fill_nan<<<grid, 256, 0, stream>>>(D, size_t(batch) * bs_d);
      CUDA_CHECK(cudaGetLastError());
      if (L.run(&pr, ws, ws_bytes, stream) != 0) throw std::runtime_error(std::string("fact_gemm_run: ") + L.err());
      CUDA_CHECK(cudaGetLastError());
      cublas_gemm(false);
      CUDA_CHECK(cudaMemsetAsync(bad_d, 0, sizeof(unsigned long long), stream));
      count_bad<<<grid, 256, 0, stream>>>(D, batch, m, n, ld_d, bs_d, bad_d);
      CUDA_CHECK(cudaGetLastError());
      unsigned long long bad = 0;
      CUDA_CHECK(cudaMemcpyAsync(&bad, bad_d, sizeof(bad), cudaMemcpyDeviceToHost, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));

      std::vector<double> ref_all;
      std::vector<float> got_all, eager_all;
      std::vector<double> hr(size_t(nr) * nc);
      for (int64_t b : bsel) {
        gather_a<<<grid, 256, 0, stream>>>(A + b * bs_a, ld_a, o.a_row, rows_d, nr, k, ga);
        gather_b<<<grid, 256, 0, stream>>>(B + b * bs_b, ld_b, o.b_row, cols_d, nc, k, gb);
        CUDA_CHECK(cudaGetLastError());
        const double one = 1.0, zero = 0.0;
        // gr (nr x nc row-major) = ga (nr x k row-major) . gb (k x nc row-major)
        CUBLAS_CHECK(cublasDgemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, nc, nr, int(k), &one, gb, nc, ga, int(k), &zero, gr, nc));
        CUDA_CHECK(cudaMemcpyAsync(hr.data(), gr, sizeof(double) * nr * nc, cudaMemcpyDeviceToHost, stream));
        std::vector<float> drow(n), srow(n), erow(o.ep == EP_NONE ? 0 : n);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        for (int i = 0; i < nr; ++i) {
          CUDA_CHECK(cudaMemcpy(drow.data(), D + b * bs_d + int64_t(rows[i]) * ld_d, sizeof(float) * n, cudaMemcpyDeviceToHost));
          CUDA_CHECK(cudaMemcpy(srow.data(), S + b * m * n + int64_t(rows[i]) * n, sizeof(float) * n, cudaMemcpyDeviceToHost));
          if (o.ep == EP_C)
            CUDA_CHECK(cudaMemcpy(erow.data(), E + b * bs_e + int64_t(rows[i]) * ld_e, sizeof(float) * n, cudaMemcpyDeviceToHost));
          else if (o.ep == EP_BIAS)
            CUDA_CHECK(cudaMemcpy(erow.data(), E + b * bs_e, sizeof(float) * n, cudaMemcpyDeviceToHost));
          for (int j = 0; j < nc; ++j) {
            double r = hr[size_t(i) * nc + j];
            float s = srow[cols[j]];
            if (o.ep != EP_NONE) {
              r = alpha * r + double(beta) * erow[cols[j]];
              s = alpha * s + beta * erow[cols[j]];  // eager: fp32 epilogue after SGEMM
            }
            ref_all.push_back(r);
            got_all.push_back(drow[cols[j]]);
            eager_all.push_back(s);
          }
        }
      }
      Score sk = score(ref_all, got_all), se = score(ref_all, eager_all);
      const double bound = o.terms == 1 ? 2e-2 : o.terms == 3 ? 2e-4 : 2e-5;
      bool correct = bad == 0 && sk.relf <= bound;
      bool bar = sk.fail <= se.fail + 0.001 && sk.maxabs <= 2 * se.maxabs;
      // At 1e-2 the max-abs clause is not applied: eager fp32's error is far
      // below that class, so only the fail fraction is meaningful.
      bool bar2 = sk.fail2 <= se.fail2 + 0.001;
      std::printf("CHECK b=%lld m=%lld n=%lld k=%lld %-7s samples=%zu nonfinite=%llu | kernel fail=%.3e maxabs=%.2e "
                  "relF=%.2e fail@1e-2=%.3e | eager fail=%.3e maxabs=%.2e relF=%.2e | %s bar1e-4=%s bar1e-2=%s\n",
                  (long long)batch, (long long)m, (long long)n, (long long)k, normal ? "normal" : "uniform",
                  ref_all.size(), bad, sk.fail, sk.maxabs, sk.relf, sk.fail2, se.fail, se.maxabs, se.relf,
                  correct ? "OK" : "WRONG", bar ? "pass" : "miss", bar2 ? "pass" : "miss");
      if (!correct) ++failures;
      if (o.require_bar && !(o.tolerance < 1e-3 ? bar : bar2)) ++failures;
    }

    if (o.time) {
      auto time_it = [&](auto&& fn) { return dev.time(fn, o.reps); };
      auto tk = time_it([&] {
        if (L.run(&pr, ws, ws_bytes, stream) != 0) throw std::runtime_error(std::string("fact_gemm_run: ") + L.err());
      });
      auto ts = time_it([&] { cublas_gemm(false); });
      auto tt = time_it([&] { cublas_gemm(true); });
      double flop = 2.0 * batch * m * n * k;
      std::printf("TIME b=%lld m=%lld n=%lld k=%lld | fact %.4f ms (mean %.4f, %.1f TFLOP/s) | cublas fp32 %.4f ms "
                  "(mean %.4f) | cublas tf32 %.4f ms (mean %.4f) | speedup vs fp32 %.2fx, vs tf32 %.2fx\n",
                  (long long)batch, (long long)m, (long long)n, (long long)k, tk.first, tk.second,
                  flop / tk.first * 1e-9, ts.first, ts.second, tt.first, tt.second, ts.first / tk.first,
                  tt.first / tk.first);
    }
    CUDA_CHECK(cudaFree(A0)); CUDA_CHECK(cudaFree(B0)); CUDA_CHECK(cudaFree(D0)); CUDA_CHECK(cudaFree(S));
    if (E0) CUDA_CHECK(cudaFree(E0));
    if (ws) CUDA_CHECK(cudaFree(ws));
    CUDA_CHECK(cudaFree(rows_d)); CUDA_CHECK(cudaFree(cols_d));
    CUDA_CHECK(cudaFree(ga)); CUDA_CHECK(cudaFree(gb)); CUDA_CHECK(cudaFree(gr));
  }
  CUBLAS_CHECK(cublasDestroy(cb));
  std::printf("RESULT %s: %s (%d failing checks)\n", L.name(), failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  CLI::App app{"split_gemm_check: correctness and timing of a FACT fp32 GEMM kernel library"};
  add_common_options(app, o.lib, o.shapes, o.time, o.reps, "B,M,N,K");
  std::string a = "row", b = "row", ep = "none";
  app.add_option("--a", a, "A layout")->check(CLI::IsMember({"row", "col"}));
  app.add_option("--b", b, "B layout")->check(CLI::IsMember({"row", "col"}));
  app.add_option("--ep", ep, "epilogue")->check(CLI::IsMember({"none", "bias", "c"}));
  app.add_option("--terms", o.terms, "split terms of the math mode (1, 3, 6)")->check(CLI::IsMember({1, 3, 6}));
  app.add_flag("--require-bar", o.require_bar, "fail when the accuracy bar at --tolerance is missed");
  app.add_option("--tolerance", o.tolerance, "1e-4 or 1e-2 class");
  app.add_option("--pad", o.pad, "elements added to every leading dimension (default: 4 for m, n <= 512, else 0)");
  app.add_option("--offset", o.offset, "elements by which A, B, D and E start past their aligned allocations")
      ->check(CLI::Range(0, 64));
  if (int rc = parse_or_exit(app, argc, argv)) return rc < 0 ? 0 : rc;
  o.a_row = a == "row";
  o.b_row = b == "row";
  o.ep = ep == "none" ? EP_NONE : ep == "bias" ? EP_BIAS : EP_C;
  return run_reporting("split_gemm_check", [&] { return run_all(o); });
}

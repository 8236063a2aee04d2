// A deliberately simple GEMM behind the FACT kernel C ABI, used by
// tests/python/test_fact_gpu.py to exercise fact.kernel / fact.worker /
// fact.runtime on a GPU without a CUTLASS build. One thread per output
// element, fp32 FMA over k in order. Compile-time choices, as in a realized
// variant: FACT_ROW_A / FACT_ROW_B (1 = row, 0 = col), FACT_EPI (0 none,
// 1 bias, 2 c), FACT_NAME; FACT_BUG=1 skips the last output column (the
// worker's NaN poisoning must catch it).
#include <cuda_runtime.h>

#include <string>

#include "fact_export.cuh"

#ifndef FACT_BUG
#define FACT_BUG 0
#endif

namespace {

__global__ void naive_gemm(FactGemmProblem p) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t i = blockIdx.y * int64_t(blockDim.y) + threadIdx.y;
  const int64_t b = blockIdx.z;
  if (i >= p.m || j >= p.n - (FACT_BUG ? 1 : 0)) return;
  const float* A = static_cast<const float*>(p.a) + b * p.batch_stride_a;
  const float* B = static_cast<const float*>(p.b) + b * p.batch_stride_b;
  float acc = 0.f;
  for (int64_t k = 0; k < p.k; ++k) {
    const float av = FACT_ROW_A ? A[i * p.ld_a + k] : A[k * p.ld_a + i];
    const float bv = FACT_ROW_B ? B[k * p.ld_b + j] : B[j * p.ld_b + k];
    acc = fmaf(av, bv, acc);
  }
  float out = p.alpha * acc;
  const float* E = static_cast<const float*>(p.e);
  if (FACT_EPI == 1) out += p.beta * E[j];
  if (FACT_EPI == 2) out += p.beta * E[b * p.batch_stride_e + i * p.ld_e + j];
  static_cast<float*>(p.d)[b * p.batch_stride_d + i * p.ld_d + j] = out;
}

struct NaiveGemm {
  static int can_implement(const FactGemmProblem& p, std::string& why) {
    if (p.batch < 1 || p.m < 1 || p.n < 1 || p.k < 1) {
      why = "empty problem";
      return 1;
    }
    if (p.a == nullptr || p.b == nullptr || p.d == nullptr) {
      why = "null operand pointer";  // as the realized variants do
      return 1;
    }
    if (FACT_EPI != 0 && p.e == nullptr) {
      why = "epilogue operand missing";
      return 1;
    }
    if (p.batch > 65535) {
      why = "batch exceeds gridDim.z";
      return 1;
    }
    return 0;
  }
  static size_t workspace_size(const FactGemmProblem&) { return 0; }
  static int run(const FactGemmProblem& p, void*, size_t, cudaStream_t stream, std::string&) {
    dim3 block(32, 8);
    dim3 grid(unsigned((p.n + 31) / 32), unsigned((p.m + 7) / 8), unsigned(p.batch));
    naive_gemm<<<grid, block, 0, stream>>>(p);
    return ::fact::kernel_export::check_launch("naive_gemm");
  }
};

}  // namespace

FACT_EXPORT_GEMM(NaiveGemm, FACT_NAME)

/* FACT kernel C ABI, version 1 (docs/CONTRACTS.md §4).
 *
 * Every realized variant is one shared library exporting these symbols. The
 * library is torch-free: callers pass device pointers and a cudaStream_t as
 * void*. Layouts and element types are compiled into the variant; sizes,
 * leading dimensions and batch strides are run-time values.
 *
 * Contract: no entry point aborts the process or prints; a non-zero return is
 * an error whose text fact_last_error() returns (thread-local, valid until the
 * next call from the same thread). Python loads this through ctypes, so the
 * struct layout below is mirrored in python/fact/kernel.py: change both.
 */
#ifndef FACT_KERNEL_ABI_H
#define FACT_KERNEL_ABI_H

#include <stddef.h>
#include <stdint.h>

#define FACT_KERNEL_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

/* Epilogue source E in D = alpha * (A.B) + beta * E. */
enum FactEpilogueKind {
  FACT_EPILOGUE_NONE = 0, /* E unused */
  FACT_EPILOGUE_BIAS = 1, /* E is a vector of n elements broadcast over rows */
  FACT_EPILOGUE_C = 2     /* E is an m x n row-major matrix (ld_e, batch_stride_e) */
};

/* One (batched) GEMM: D[b] = alpha * A[b] . B[b] + beta * E[b].
 * A is m x k, B is k x n, D is m x n row-major; see CONTRACTS.md §2 for
 * what "row" and "col" mean for A and B. A batch stride of 0 shares that
 * operand across the batch. All strides are in elements. */
typedef struct FactGemmProblem {
  int64_t batch, m, n, k;
  const void* a;
  int64_t ld_a, batch_stride_a;
  const void* b;
  int64_t ld_b, batch_stride_b;
  void* d;
  int64_t ld_d, batch_stride_d;
  const void* e;
  int64_t ld_e, batch_stride_e;
  float alpha, beta;
} FactGemmProblem;

/* Identity of the library: its procedural variant name and ABI version. */
const char* fact_variant_name(void);
int fact_abi_version(void);

/* 0 when the variant can run this problem (alignment, sizes, epilogue kind),
 * else non-zero with the reason in fact_last_error(). Pure host check. */
int fact_gemm_can_implement(const FactGemmProblem* problem);

/* Device workspace bytes run() needs for this problem (may be 0). */
size_t fact_gemm_workspace_size(const FactGemmProblem* problem);

/* Enqueue the GEMM on `stream` (a cudaStream_t). Asynchronous: a 0 return
 * means the launch succeeded, not that the kernel finished. */
int fact_gemm_run(const FactGemmProblem* problem, void* workspace, size_t workspace_bytes,
                  void* stream);

const char* fact_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* FACT_KERNEL_ABI_H */

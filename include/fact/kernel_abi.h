/* FACT kernel C ABI, version 3 (docs/CONTRACTS.md §4).
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

/* 2: FactGemmProblem gained the epilogue-chain leaves (num_leaves, leaves[]).
 * 3: operand images (d_image, a_image, fact_gemm_image_format, fact_gemm_image_bytes).
 * 4: LayerNorm libraries write operand images (fact_layernorm_image_formats, _image_bytes,
 *    _image_can_implement, _run_image). */
#define FACT_KERNEL_ABI_VERSION 4

#ifdef __cplusplus
extern "C" {
#endif

/* Epilogue source E in D = alpha * (A.B) + beta * E. */
enum FactEpilogueKind {
  FACT_EPILOGUE_NONE = 0, /* E unused */
  FACT_EPILOGUE_BIAS = 1, /* E is a vector of n elements broadcast over rows */
  FACT_EPILOGUE_C = 2     /* E is an m x n row-major matrix (ld_e, batch_stride_e) */
};

/* Most leaf tensors one epilogue chain reads. */
#define FACT_GEMM_MAX_LEAVES 8

/* One leaf tensor of an epilogue chain (CONTRACTS.md §2.1, §4): how the
 * variant reads it (row vector, column vector, scalar or full matrix) is
 * compiled in; `ld` (full matrix: elements between rows, else 0) and
 * `batch_stride` (0 = shared by all batches) are run-time. */
typedef struct FactEpilogueLeaf {
  const void* ptr;
  int64_t ld, batch_stride;
} FactEpilogueLeaf;

/* One (batched) GEMM: D[b] = alpha * A[b] . B[b] + beta * E[b].
 * A is m x k, B is k x n, D is m x n row-major; see CONTRACTS.md §2 for
 * what "row" and "col" mean for A and B. A batch stride of 0 shares that
 * operand across the batch. All strides are in elements.
 * A variant with an epilogue chain (name suffix _evt<key>) computes
 * D[b] = chain(alpha * A[b] . B[b] + beta * E[b], leaves...) and reads
 * leaves[0 .. num_leaves-1] in the chain's l0, l1, ... order; every other
 * variant ignores num_leaves and leaves (zero them). */
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
  int32_t num_leaves;
  FactEpilogueLeaf leaves[FACT_GEMM_MAX_LEAVES];
  /* Operand hand-off between two GEMMs (docs/CONTRACTS.md §4.1), null = unused.
   * d_image: D is written as the pre-split A operand of a GEMM whose A is this D
   * (M = m, K = n), in the format fact_gemm_image_format() names, instead of to d
   * (d, ld_d, batch_stride_d are then not read). a_image: A is read from such an
   * image (a, ld_a, batch_stride_a are then not read). Both 256-byte aligned,
   * fact_gemm_image_bytes(problem, 1) / (problem, 0) bytes. A variant whose
   * format is "" rejects both (can_implement). */
  void* d_image;
  const void* a_image;
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

/* The operand-image format this variant reads (a_image) and writes (d_image), ""
 * when it does neither. Two variants with the same non-empty format can hand a D
 * image from one to the other. */
const char* fact_gemm_image_format(void);
/* Bytes of the image of this problem's A (role 0) or of its D as the A of the
 * next GEMM (role 1); 0 when the variant has no image format. */
size_t fact_gemm_image_bytes(const FactGemmProblem* problem, int role);

/* ---- LayerNorm libraries (layernorm_* and rmsnorm_* variants; docs/CONTRACTS.md §4) ----
 * y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * weight + bias over `cols`,
 * mean and (biased) variance in fp32, two passes over the row held in registers.
 * rmsnorm_* variants: y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, one
 * fp32 pass; they refuse a non-null bias.
 * With a residual variant x = x_in + residual (both read), and `sum` receives x
 * when the variant writes it. Rows are `row_stride` elements apart; a row's
 * elements are contiguous. weight / bias are contiguous vectors of `cols`
 * elements, or null when absent. Element types are compiled in. */
typedef struct FactLayerNormProblem {
  int64_t rows, cols;
  const void* x;        /* the input, or operand a of x = a + b */
  int64_t x_row_stride;
  const void* residual; /* operand b of x = a + b; null for a non-residual variant */
  int64_t residual_row_stride;
  void* sum;            /* x = a + b is written here by a *_res_sum variant; else null */
  int64_t sum_row_stride;
  const void* weight;   /* null when absent */
  const void* bias;     /* null when absent */
  void* y;
  int64_t y_row_stride;
  float eps;
} FactLayerNormProblem;

int fact_layernorm_can_implement(const FactLayerNormProblem* problem);
/* Enqueue on `stream`; asynchronous like fact_gemm_run. No workspace. */
int fact_layernorm_run(const FactLayerNormProblem* problem, void* stream);

/* Operand images (docs/CONTRACTS.md §4.1): y written as the pre-split A operand of a
 * GEMM with M = rows, K = cols (batch 1), in one of the fact_gemm_image_format()
 * formats, instead of to y (y and y_row_stride are then not read; a *_res_sum
 * variant still writes `sum`). The image is byte for byte what that GEMM's own
 * pre-pass makes of the fp32 y that fact_layernorm_run writes.
 * fact_layernorm_image_formats: the formats this library writes, ';'-separated,
 * "" for none (a library not built for sm90). fact_layernorm_image_bytes: bytes of
 * y's image in `format` (0 when the library does not write it). `image` is 256-byte
 * aligned. */
const char* fact_layernorm_image_formats(void);
size_t fact_layernorm_image_bytes(const FactLayerNormProblem* problem, const char* format);
int fact_layernorm_image_can_implement(const FactLayerNormProblem* problem, const char* format);
int fact_layernorm_run_image(const FactLayerNormProblem* problem, const char* format, void* image, void* stream);

/* ---- Attention libraries (attention_* variants) ----
 * O[b,h,i,:] = softmax_j(scale * Q[b,h,i,:].K[b,h,j,:] (+ causal mask)) . V[b,h,j,:]
 * Element (b,h,s,d) of q/k/v/o is at ptr + b*stride_batch + h*stride_head +
 * s*stride_seq + d (elements; the pointers already include the payload's
 * offsets). causal: 0 = no mask, 1 = keys j <= i only (top-left aligned). */
typedef struct FactAttentionProblem {
  int64_t batch, heads, seq_q, seq_k, head_dim, head_dim_v;
  const void* q;
  int64_t q_stride_batch, q_stride_head, q_stride_seq;
  const void* k;
  int64_t k_stride_batch, k_stride_head, k_stride_seq;
  const void* v;
  int64_t v_stride_batch, v_stride_head, v_stride_seq;
  void* o;
  int64_t o_stride_batch, o_stride_head, o_stride_seq;
  float scale;
  int32_t causal;
} FactAttentionProblem;

int fact_attention_can_implement(const FactAttentionProblem* problem);
size_t fact_attention_workspace_size(const FactAttentionProblem* problem);
int fact_attention_run(const FactAttentionProblem* problem, void* workspace, size_t workspace_bytes,
                       void* stream);

#ifdef __cplusplus
}
#endif

#endif /* FACT_KERNEL_ABI_H */

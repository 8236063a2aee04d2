// Operand pre-pass for the 16-bit math modes of FACT's GEMM templates
// (gemm_sm90.cuh): converts an fp32 operand into one or more 16-bit parts laid
// out side by side along K in a device workspace, so that ONE 16-bit GEMM with
// K' = Segments * Kp computes the requested sum of part products.
//
//   Terms 1 (bf16 / f16):  x ~ r(x)                          segments: A0*B0
//   Terms 3 (bf16x3):      x = hi + lo                       segments: lo*hi, hi*lo, hi*hi
//   Terms 6 (bf16x6):      x = hi + mid + lo                 segments: hl, mm, lh, hm, mh, hh
//   f16x3: Terms 3 with fp16 parts of the operand scaled by a power of two
//          (shift_for_amax_bits), undone through the GEMM's alpha.
// where each part is the bf16 round-to-nearest of the remainder left by the
// previous parts. Small products come first so they are accumulated before
// the large ones.
//
// Contract: every segment is Kp = round_up(K, KAlign) long and zero padded past
// K, so a K-tile of the GEMM never straddles two segments when KAlign is a
// multiple of the tile K (the promotion interval of the promoted mainloop then
// stays inside one segment, and the padding contributes exact zeros).
// The workspace keeps the operand's major-ness: a K-major operand (A row /
// B col) is written [rows][Segments * Kp]; an MN-major one [Segments * Kp][Rp]
// with Rp = round_up(rows, 8) so every row starts 16-byte aligned for TMA.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fact::split {

// Which part of A and of B each K segment multiplies (part 0 = hi).
template <int Terms>
struct SegmentPlan;

template <>
struct SegmentPlan<1> {
  static constexpr int kSegments = 1;
  static constexpr int kParts = 1;
  static constexpr int a_part[1] = {0};
  static constexpr int b_part[1] = {0};
};

template <>
struct SegmentPlan<3> {
  static constexpr int kSegments = 3;
  static constexpr int kParts = 2;
  static constexpr int a_part[3] = {1, 0, 0};
  static constexpr int b_part[3] = {0, 1, 0};
};

template <>
struct SegmentPlan<6> {
  static constexpr int kSegments = 6;
  static constexpr int kParts = 3;
  static constexpr int a_part[6] = {0, 1, 2, 0, 1, 0};
  static constexpr int b_part[6] = {2, 1, 0, 1, 0, 0};
};

// Segment -> part table passed by value to the kernel.
struct PartTable {
  int part[6];
};

template <class T>
__device__ inline T round_to(float x);
template <>
__device__ inline __nv_bfloat16 round_to<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ inline __half round_to<__half>(float x) { return __float2half_rn(x); }
template <class T>
__device__ inline float widen(T x);
template <>
__device__ inline float widen<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
__device__ inline float widen<__half>(__half x) { return __half2float(x); }

// parts[p] for p < Parts: successive round-to-nearest remainders of x.
template <class T, int Parts>
__device__ inline void split_value(float x, T (&parts)[Parts]) {
  float rest = x;
#pragma unroll
  for (int p = 0; p < Parts; ++p) {
    parts[p] = round_to<T>(rest);
    rest = rest - widen<T>(parts[p]);
  }
}

// Power-of-two scaling for fp16 parts (f16x3): an operand whose largest
// magnitude is `amax` is multiplied by 2^shift with amax * 2^shift < 2^15, so
// hi = fp16(x * 2^shift) cannot overflow and lo = fp16(x * 2^shift - hi) keeps
// its bits out of the fp16 subnormal range for all but the operand's tiny
// elements. Scaling by a power of two is exact; the GEMM's alpha is divided by
// 2^(shift_a + shift_b) (scaled_alpha_kernel). amax is passed as the bit
// pattern of a non-negative float (ordered like unsigned integers).
__host__ __device__ inline int shift_for_amax_bits(unsigned bits) {
  const int biased = static_cast<int>((bits >> 23) & 0xff);
  if (bits == 0 || biased == 0xff) return 0;  // all zeros, or inf / NaN: leave unscaled
  const int exponent = biased == 0 ? -127 : biased - 127;  // floor(log2(amax)) for normals
  int shift = 14 - exponent;
  if (shift > 100) shift = 100;
  if (shift < -100) shift = -100;
  return shift;
}

// Launch shape shared by the pre-pass kernels: blockIdx.x strides over rows
// (batch x outer), blockIdx.y splits a row's inner extent into chunks, threads
// stride over 4-element groups of the chunk. Only one 64-bit division per row.
constexpr int kPrepassThreads = 256;
constexpr int kGroupsPerThread = 8;

// Largest |x| of an operand's valid extent (all batches) into *amax_bits (must
// start at 0). rows = batches * outer, inner = valid inner extent.
__global__ void amax_kernel(const float* __restrict__ src, int64_t outer, int64_t inner, int64_t ld,
                            int64_t batch_stride, int64_t batches, bool vector_loads, unsigned* amax_bits) {
  unsigned local = 0;
  const int64_t rows = outer * batches, groups = (inner + 3) / 4;
  const int64_t chunk = (groups + gridDim.y - 1) / gridDim.y;
  const int64_t g_begin = blockIdx.y * chunk, g_end = min(groups, g_begin + chunk);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t b = r / outer, o = r - b * outer;
    const float* row = src + b * batch_stride + o * ld;
    for (int64_t g = g_begin + threadIdx.x; g < g_end; g += blockDim.x) {
      const int64_t i = g * 4;
      float v[4] = {0.f, 0.f, 0.f, 0.f};
      if (vector_loads && i + 3 < inner) {
        const float4 q = *reinterpret_cast<const float4*>(row + i);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (i + j < inner) v[j] = row[i + j];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const unsigned bits = __float_as_uint(fabsf(v[j]));
        local = bits > local ? bits : local;
      }
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const unsigned other = __shfl_down_sync(0xffffffffu, local, offset);
    local = other > local ? other : local;
  }
  if ((threadIdx.x & 31) == 0 && local != 0) atomicMax(amax_bits, local);
}

// alpha / 2^(shift_a + shift_b) for the epilogue (one thread).
__global__ void scaled_alpha_kernel(float alpha, const unsigned* amax_bits, float* out) {
  *out = ldexpf(alpha, -(shift_for_amax_bits(amax_bits[0]) + shift_for_amax_bits(amax_bits[1])));
}

// Geometry of one operand and of its workspace image (all in elements).
struct SplitGeometry {
  int64_t rows;          // M for A, N for B
  int64_t k;             // K
  bool k_major;          // K is the contiguous dimension of the source
  int64_t ld;            // source leading dimension
  int64_t batch_stride;  // source batch stride (0 = shared; the image is still per batch)
  int64_t batches;
  int64_t kp;            // padded segment length
  int segments;
  // Derived image geometry.
  __host__ __device__ int64_t dst_ld() const { return k_major ? segments * kp : round_up(rows, 8); }
  __host__ __device__ int64_t dst_batch_elems() const { return k_major ? rows * segments * kp : segments * kp * round_up(rows, 8); }
  __host__ __device__ int64_t segment_offset() const { return k_major ? kp : kp * round_up(rows, 8); }
  // The padded iteration domain: outer x inner, inner contiguous in both images.
  __host__ __device__ int64_t outer() const { return k_major ? rows : kp; }
  __host__ __device__ int64_t inner() const { return k_major ? kp : round_up(rows, 8); }
  __host__ __device__ int64_t valid_outer() const { return k_major ? rows : k; }
  __host__ __device__ int64_t valid_inner() const { return k_major ? k : rows; }
  __host__ __device__ static constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
};

// One thread writes 4 consecutive inner elements of every segment (one 8-byte
// store per segment). Source reads are float4 when `vector_loads` (16-byte
// aligned base, valid inner extent, ld and batch stride multiples of 4);
// otherwise scalar with bounds checks. Elements outside the source extent are
// written as zeros (segment padding). Grid as for amax_kernel over the padded
// image rows (batches x outer()) and inner() / 4 groups.
template <class T, int Parts>
__global__ void split_operand_kernel(const float* __restrict__ src, SplitGeometry g, T* __restrict__ dst,
                                     PartTable table, bool vector_loads, const unsigned* amax_bits) {
  // amax_bits non-null: scale by 2^shift first (f16x3; see shift_for_amax_bits).
  const int shift = amax_bits ? shift_for_amax_bits(*amax_bits) : 0;
  const int64_t outer = g.outer(), groups = g.inner() / 4, rows = outer * g.batches;
  const int64_t vo = g.valid_outer(), vi = g.valid_inner();
  const int64_t dst_ld = g.dst_ld(), seg_off = g.segment_offset(), dst_bs = g.dst_batch_elems();
  const int64_t chunk = (groups + gridDim.y - 1) / gridDim.y;
  const int64_t g_begin = blockIdx.y * chunk, g_end = min(groups, g_begin + chunk);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t b = r / outer, o = r - b * outer;
    const float* row = src + b * g.batch_stride + o * g.ld;
    T* out_row = dst + b * dst_bs + o * dst_ld;
    for (int64_t grp = g_begin + threadIdx.x; grp < g_end; grp += blockDim.x) {
      const int64_t i = grp * 4;
      float v[4] = {0.f, 0.f, 0.f, 0.f};
      if (o < vo) {
        if (vector_loads && i + 3 < vi) {
          const float4 q = *reinterpret_cast<const float4*>(row + i);
          v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
        } else {
#pragma unroll
          for (int j = 0; j < 4; ++j)
            if (i + j < vi) v[j] = row[i + j];
        }
      }
      if (shift != 0) {
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = ldexpf(v[j], shift);
      }
      T parts[4][Parts];
#pragma unroll
      for (int j = 0; j < 4; ++j) split_value<T, Parts>(v[j], parts[j]);
      T* out = out_row + i;
      for (int s = 0; s < g.segments; ++s) {
        const int p = table.part[s];
        // 4 x 16-bit = one 8-byte store; dst_ld, seg_off and i are multiples of 4.
        union {
          T t[4];
          uint2 u;
        } pack;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          // p is uniform per segment; select without dynamic register indexing.
          T value = parts[j][0];
#pragma unroll
          for (int q = 1; q < Parts; ++q)
            if (p == q) value = parts[j][q];
          pack.t[j] = value;
        }
        *reinterpret_cast<uint2*>(out + s * seg_off) = pack.u;
      }
    }
  }
}

// Grid for the pre-pass kernels over `rows` rows of `groups` 4-element groups.
inline dim3 prepass_grid(int64_t rows, int64_t groups) {
  const int64_t per_block = int64_t(kPrepassThreads) * kGroupsPerThread;
  int64_t chunks = (groups + per_block - 1) / per_block;
  int64_t x = rows < 65535 ? rows : 65535;
  // Enough blocks for the whole GPU even when there are few long rows.
  if (chunks > 1024) chunks = 1024;
  if (x < 1) x = 1;
  if (chunks < 1) chunks = 1;
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(chunks), 1);
}

// Enqueues the split of one operand into `dst` (which must hold
// g.dst_batch_elems() * g.batches elements, 16-byte aligned). With amax_bits
// (device, written by amax_kernel earlier on the stream) the operand is scaled
// by a power of two first. Returns the launch status.
template <class T, int Terms>
cudaError_t split_operand(const float* src, const SplitGeometry& g, T* dst, bool is_a, cudaStream_t stream,
                          const unsigned* amax_bits = nullptr) {
  using Plan = SegmentPlan<Terms>;
  PartTable table{};
  for (int s = 0; s < Plan::kSegments; ++s) table.part[s] = is_a ? Plan::a_part[s] : Plan::b_part[s];
  const bool vector_loads = (reinterpret_cast<uintptr_t>(src) % 16 == 0) && (g.ld % 4 == 0) &&
                            (g.batch_stride % 4 == 0) && (g.valid_inner() % 4 == 0);
  split_operand_kernel<T, Plan::kParts><<<prepass_grid(g.outer() * g.batches, g.inner() / 4), kPrepassThreads, 0,
                                          stream>>>(src, g, dst, table, vector_loads, amax_bits);
  return cudaGetLastError();
}

// Enqueues amax of one operand's valid extent into *amax_bits (zeroed by the caller).
inline cudaError_t operand_amax(const float* src, const SplitGeometry& g, unsigned* amax_bits, cudaStream_t stream) {
  const bool vector_loads = (reinterpret_cast<uintptr_t>(src) % 16 == 0) && (g.ld % 4 == 0) &&
                            (g.batch_stride % 4 == 0) && (g.valid_inner() % 4 == 0);
  amax_kernel<<<prepass_grid(g.valid_outer() * g.batches, (g.valid_inner() + 3) / 4), kPrepassThreads, 0, stream>>>(
      src, g.valid_outer(), g.valid_inner(), g.ld, g.batch_stride, g.batches, vector_loads, amax_bits);
  return cudaGetLastError();
}

}  // namespace fact::split

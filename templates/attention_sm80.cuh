// FACT fused multi-head attention template: CUTLASS example 41's forward
// kernel (xformers' memory-efficient attention), included from the pinned
// CUTLASS tree (examples/41_fused_multi_head_attention), never copied.
//   O[b,h,i,:] = softmax_j(scale * Q[b,h,i,:].K[b,h,j,:] (+ causal mask)) . V[b,h,j,:]
// fp32 operands on ArchTag Sm80: tensor cores with OpMultiplyAddFastF32
// (3xTF32, fp32-faithful), online softmax in fp32; runs on Hopper through
// mma.sync (compute_80 PTX compiled to the target's SASS).
//
// Addressing (the payload's strides map onto the kernel's params, no copies):
// q/k/v: any batch/head/seq strides (seq and head strides fit int32). The
// kernel writes O[b,h,s,:] at o + (b*seq_q + s)*o_stride_seq + h*head_dim_v,
// so it serves exactly the outputs with o_stride_head == head_dim_v and
// o_stride_batch == seq_q*o_stride_seq: the merged-heads [B, T, H*dv] layout of
// the explicit form's transpose(1, 2).contiguous().view(B, T, C).
// Hazard: a variant whose kMaxK exceeds kKeysPerBlock accumulates partial
// outputs through o with row stride head_dim_v*heads (the kernel hard-codes
// it), so those variants also require o_stride_seq == head_dim_v*heads.
#pragma once

#include <cuda_runtime.h>

#include <stdint.h>

#include <string>

#include "41_fused_multi_head_attention/kernel_forward.h"
#include "attention_problem.cuh"
#include "fact/kernel_abi.h"
#include "kernel_launch.cuh"

namespace fact::attention_sm80 {

// MaxK: upper bound on max(head_dim, head_dim_v) compiled into the kernel
// (65536 = unbounded, xformers' convention); MaxK <= KeysPerBlock keeps the
// output tile in registers ("single value iteration"). Measured with nvcc 13.0:
// the fp32 tiles FACT enumerates (32x128, 64x64, 64x128; kMaxK 64, 128, 65536)
// need 36-101 KiB of shared memory, within the sm80 and sm90 opt-in limits.
template <int QueriesPerBlock_, int KeysPerBlock_, int MaxK_>
struct Config {
  static constexpr int kQueriesPerBlock = QueriesPerBlock_;
  static constexpr int kKeysPerBlock = KeysPerBlock_;
  static constexpr int kMaxK = MaxK_;
};

template <class Cfg>
struct Operation {
  using Kernel = AttentionKernel<float, cutlass::arch::Sm80, /*isAligned*/ true, Cfg::kQueriesPerBlock,
                                 Cfg::kKeysPerBlock, Cfg::kMaxK, /*kSupportsDropout*/ false,
                                 /*kSupportsBias*/ false>;
  // fp32 output: the kernel accumulates in place in O, no extra buffer.
  static_assert(!Kernel::kNeedsOutputAccumulatorBuffer, "fp32 attention needs no accumulator workspace");

  static int can_implement(const FactAttentionProblem& p, std::string& why) {
    using fact::attention::fits_int32;
    if (int code = fact::attention::check_problem(p, Cfg::kMaxK, "kMaxK", why)) return code;
    if (p.head_dim % Kernel::kAlignmentQ != 0) {
      // Q and K rows are read in 16-byte vectors along head_dim (isAligned kernel).
      why = "head_dim " + std::to_string(p.head_dim) + " is not a multiple of " +
            std::to_string(Kernel::kAlignmentQ) + " (16-byte vector loads)";
      return 3;
    }
    if (!fits_int32(p.seq_q) || !fits_int32(p.seq_k) || !fits_int32(p.batch) || !fits_int32(p.heads)) {
      why = "sizes exceed int32";
      return 2;
    }
    if (p.o_stride_head != p.head_dim_v || p.o_stride_batch != p.seq_q * p.o_stride_seq) {
      why = "the kernel writes O at (b*seq_q + s)*o_stride_seq + h*head_dim_v: o strides (batch " +
            std::to_string(p.o_stride_batch) + ", head " + std::to_string(p.o_stride_head) + ", seq " +
            std::to_string(p.o_stride_seq) + ") are not that layout";
      return 3;
    }
    if (!Kernel::kKeepOutputInRF && p.o_stride_seq != p.head_dim_v * p.heads) {
      why = "this variant (kMaxK > kKeysPerBlock) accumulates through O with row stride head_dim_v*heads = " +
            std::to_string(p.head_dim_v * p.heads) + ", but o_stride_seq is " + std::to_string(p.o_stride_seq);
      return 3;
    }
    struct Operand {
      const char* name;
      const void* ptr;
      int64_t batch, head, seq;
      int64_t alignment;
    };
    const Operand operands[] = {
        {"q", p.q, p.q_stride_batch, p.q_stride_head, p.q_stride_seq, Kernel::kAlignmentQ},
        {"k", p.k, p.k_stride_batch, p.k_stride_head, p.k_stride_seq, Kernel::kAlignmentK},
        {"v", p.v, p.v_stride_batch, p.v_stride_head, p.v_stride_seq, Kernel::kAlignmentV},
        {"o", p.o, p.o_stride_batch, p.o_stride_head, p.o_stride_seq, 1},
    };
    for (const auto& o : operands) {
      if (!fits_int32(o.seq) || !fits_int32(o.head)) {
        why = std::string(o.name) + " seq/head strides exceed int32 (the kernel's stride type)";
        return 3;
      }
      if (reinterpret_cast<uintptr_t>(o.ptr) % (o.alignment * sizeof(float)) != 0 || o.seq % o.alignment != 0 ||
          (p.heads > 1 && o.head % o.alignment != 0) || (p.batch > 1 && o.batch % o.alignment != 0)) {
        why = std::string(o.name) + " pointer or strides are not aligned to " + std::to_string(o.alignment) +
              " elements (16-byte vector loads)";
        return 3;
      }
    }
    return 0;
  }

  static size_t workspace_size(const FactAttentionProblem&) { return 0; }

  static typename Kernel::Params params(const FactAttentionProblem& p) {
    typename Kernel::Params k;
    k.query_ptr = const_cast<float*>(static_cast<const float*>(p.q));
    k.key_ptr = const_cast<float*>(static_cast<const float*>(p.k));
    k.value_ptr = const_cast<float*>(static_cast<const float*>(p.v));
    k.output_ptr = static_cast<float*>(p.o);
    k.output_accum_ptr = nullptr;  // fp32: accumulate in O
    k.logsumexp_ptr = nullptr;     // inference only
    k.scale = p.scale;
    k.head_dim = static_cast<int32_t>(p.head_dim);
    k.head_dim_value = static_cast<int32_t>(p.head_dim_v);
    k.num_queries = static_cast<int32_t>(p.seq_q);
    k.num_keys = static_cast<int32_t>(p.seq_k);
    k.custom_mask_type = p.causal ? Kernel::CausalFromTopLeft : Kernel::NoCustomMask;
    k.q_strideM = static_cast<int32_t>(p.q_stride_seq);
    k.k_strideM = static_cast<int32_t>(p.k_stride_seq);
    k.v_strideM = static_cast<int32_t>(p.v_stride_seq);
    k.o_strideM = static_cast<int32_t>(p.o_stride_seq);
    k.q_strideH = static_cast<int32_t>(p.q_stride_head);
    k.k_strideH = static_cast<int32_t>(p.k_stride_head);
    k.v_strideH = static_cast<int32_t>(p.v_stride_head);
    k.q_strideB = p.q_stride_batch;
    k.k_strideB = p.k_stride_batch;
    k.v_strideB = p.v_stride_batch;
    k.num_batches = static_cast<int32_t>(p.batch);
    k.num_heads = static_cast<int32_t>(p.heads);
    return k;
  }

  static int run(const FactAttentionProblem& p, void*, size_t, cudaStream_t stream, std::string& why) {
    typename Kernel::Params k = params(p);
    constexpr auto kernel_fn = attention_kernel_batched_impl<Kernel>;
    const int smem_bytes = static_cast<int>(sizeof(typename Kernel::SharedStorage));
    if (smem_bytes > 0xc000) {  // above 48 KiB a kernel must opt in
      if (int code = kernel_launch::opt_in_shared_memory(kernel_fn, smem_bytes, why, "attention needs ", smem_bytes,
                                                         " bytes of shared memory: "))
        return code;
    }
    kernel_fn<<<k.getBlocksGrid(), k.getThreadsGrid(), smem_bytes, stream>>>(k);
    return kernel_launch::launch_status(why, "attention launch: ");
  }
};

}  // namespace fact::attention_sm80

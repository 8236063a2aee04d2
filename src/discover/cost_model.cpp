// The cost model: FLOPs and bytes against measured ceilings. This file holds the
// ONLY table of device ceilings in FACT; change numbers here and nowhere else.
//
// Sources: ../shared/BASELINES.md (H100 80GB HBM3, cuBLAS 13.1, measured
// 2026-11-25): D2D copy 2.9 TB/s; cuBLAS 8192^3 fp32 51, TF32 396, bf16 751
// TFLOP/s; split modes (three 16-bit products on wgmma) measured 244-277 TFLOP/s
// of the fp32 problem (250 used). The 1e-4 split mode is f16x3, not bf16x3:
// docs/notes/NOTES.md "Outcome 1" measured bf16x3 failing 1e-4 on zero-mean data
// (16 operand bits); f16x3 runs at the same 16-bit tensor-core rate.
// A100 (sm80): datasheet peaks fp32 19.5, TF32 156, bf16 312 TFLOP/s, 1.9 TB/s;
// its fp32-faithful mode is 3xTF32 (three TF32 MMAs per product), so TF32 / 3.
#include <algorithm>
#include <array>

#include "fact/discover.hpp"
#include "fact/rules.hpp"

namespace fact {
namespace {

constexpr double T = 1e12;

constexpr std::array<DeviceCeilings, 3> kCeilings{{
    {"sm90a", "H100 SXM (measured)", 2.9e12, 51 * T, 396 * T, 751 * T, 250 * T, "f16x3"},
    {"sm90", "H100 SXM (measured)", 2.9e12, 51 * T, 396 * T, 751 * T, 250 * T, "f16x3"},
    {"sm80", "A100 (datasheet)", 1.9e12, 19.5 * T, 156 * T, 312 * T, 156 * T / 3.0, "tf32x3"},
}};

// Time of a kernel bound by whichever of compute and memory is slower.
double roofline_ms(double flops, double bytes, double flops_per_s, double bytes_per_s) {
  return std::max(flops / flops_per_s, bytes / bytes_per_s) * 1e3;
}

}  // namespace

const DeviceCeilings* ceilings_for(const std::string& arch) {
  for (const auto& c : kCeilings) {
    if (arch == c.arch) return &c;
  }
  return nullptr;
}

std::string known_archs() {
  std::string out;
  for (const auto& c : kCeilings) {
    if (!out.empty()) out += ", ";
    out += c.arch;
  }
  return out;
}

CostEstimate estimate_cost(const Workload& work, double tolerance, const DeviceCeilings& device) {
  CostEstimate c;
  c.flops = work.flops;
  c.bytes = work.bytes;
  double eager_rate = device.fp32_simt_flops;
  double best_rate = device.fp32_simt_flops;
  if (work.dtype == DType::Float32) {
    c.eager_math = "f32";
    if (tolerance >= 1e-2) {
      best_rate = device.bf16_flops;
      c.best_math = "bf16";
    } else if (tolerance >= 1e-4) {
      best_rate = device.fp32_faithful_flops;
      c.best_math = device.fp32_faithful_math;
    } else {
      c.best_math = "f32";
    }
  } else {
    // fp16/bf16 inputs: eager already runs on 16-bit tensor cores.
    eager_rate = best_rate = device.bf16_flops;
    c.eager_math = c.best_math = work.dtype == DType::Float16 ? "f16" : "bf16";
  }
  // Eager may do more than the fused kernel (materialised intermediates, masked-out scores).
  const double eager_flops = work.eager_flops > 0.0 ? work.eager_flops : work.flops;
  const double eager_bytes = work.eager_bytes > 0.0 ? work.eager_bytes : work.bytes;
  c.eager_ms = roofline_ms(eager_flops, eager_bytes, eager_rate, device.hbm_bytes_per_s);
  c.best_ms = roofline_ms(work.flops, work.bytes, best_rate, device.hbm_bytes_per_s);
  c.gain_ms = c.eager_ms - c.best_ms;
  c.memory_bound = work.bytes / device.hbm_bytes_per_s >= work.flops / best_rate;
  return c;
}

// ---- work of the transformer-block patterns (declared in fact/rules.hpp) ----

Workload attention_work(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k, int64_t head_dim,
                        int64_t head_dim_v, bool causal, int score_passes, DType dtype) {
  Workload w;
  w.dtype = dtype;
  const double bh = static_cast<double>(batch) * static_cast<double>(heads);
  const double tq = static_cast<double>(seq_q), tk = static_cast<double>(seq_k);
  const double d = static_cast<double>(head_dim), dv = static_cast<double>(head_dim_v);
  // Q.K^T (2*Tq*Tk*d) + P.V (2*Tq*Tk*dv) per head; a causal kernel skips the masked half.
  const double full = 2.0 * bh * tq * tk * (d + dv);
  w.flops = causal ? full / 2.0 : full;
  const double elem = dtype_bytes(dtype);
  const double qkvo = bh * (tq * d + tk * d + tk * dv + tq * dv) * elem;
  w.bytes = qkvo;
  // Eager computes every score and writes/reads the [B,H,Tq,Tk] matrix once per pass.
  w.eager_flops = full;
  w.eager_bytes = qkvo + static_cast<double>(score_passes) * bh * tq * tk * elem;
  return w;
}

Workload layernorm_work(int64_t rows, int64_t cols, bool affine, bool residual, bool writes_sum, DType dtype,
                        int eager_passes) {
  Workload w;
  w.dtype = dtype;
  const double n = static_cast<double>(rows) * static_cast<double>(cols);
  const double elem = dtype_bytes(dtype);
  const double params = affine ? 2.0 * static_cast<double>(cols) * elem : 0.0;
  // x read + y written (+ the second residual operand, + the sum) + weight/bias once.
  w.bytes = (2.0 + (residual ? 1.0 : 0.0) + (writes_sum ? 1.0 : 0.0)) * n * elem + params;
  w.flops = (8.0 + (residual ? 1.0 : 0.0)) * n;
  // Eager: the fused op reads x and writes y once; a written-out norm moves each of its
  // ops' row-sized operands. The add is its own kernel (reads 2, writes 1), then the
  // norm reads the sum again.
  const double norm_bytes = eager_passes > 0 ? eager_passes * n * elem + params : 2.0 * n * elem + params;
  w.eager_bytes = norm_bytes + (residual ? 3.0 * n * elem : 0.0);
  return w;
}

Workload add_epilogue_work(Workload gemm, double elements, double ops_per_element, double leaf_bytes,
                           int eager_kernels) {
  const double elem = dtype_bytes(gemm.dtype);
  Workload w = gemm;
  w.flops = gemm.flops + ops_per_element * elements;
  w.bytes = gemm.bytes + leaf_bytes;
  // Eager: each elementwise op is a kernel reading and writing the full output.
  w.eager_flops = w.flops;
  w.eager_bytes = w.bytes + 2.0 * static_cast<double>(eager_kernels) * elements * elem;
  return w;
}

double default_tolerance(const Graph& graph) {
  bool any_output = false;
  for (const auto& id : graph.outputs) {
    const Tensor* t = graph.find_tensor(id);
    if (!t) continue;
    any_output = true;
    if (t->dtype != DType::Float16 && t->dtype != DType::BFloat16) return 1e-4;
  }
  return any_output ? 1e-2 : 1e-4;
}

}  // namespace fact

// Host side of FACT's own kernel launches: the dynamic shared-memory opt-in and the launch
// status, each turned into a FACT ABI code and reason (templates/fact_export.cuh). Shared
// by the attention, LayerNorm and split GEMM templates.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <type_traits>

namespace fact::kernel_launch {

// The reason `why` for a failure: the pieces (strings, C strings, integers), then the
// CUDA error. Built only on failure: the launches are on every forward's path.
template <class... Pieces>
void set_reason(std::string& why, cudaError_t status, const Pieces&... pieces) {
  why.clear();
  const auto append = [&](const auto& piece) {
    if constexpr (std::is_integral_v<std::decay_t<decltype(piece)>>)
      why += std::to_string(piece);
    else
      why += piece;
  };
  (append(pieces), ...);
  why += cudaGetErrorString(status);
}

// Lets `kernel` use `bytes` of dynamic shared memory (above 48 KiB a kernel must opt in;
// it fails where the card has less). On failure: `why` = the pieces + the CUDA error, the
// (non-sticky) error is cleared so that no later launch check reports it, and the CUDA
// code is returned.
template <class Kernel, class... Pieces>
int opt_in_shared_memory(Kernel* kernel, size_t bytes, std::string& why, const Pieces&... pieces) {
  const cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (status == cudaSuccess) return 0;
  set_reason(why, status, pieces...);
  cudaGetLastError();
  return static_cast<int>(status);
}

// The status of the launch just issued: 0, or the CUDA code with `why` = the pieces + the
// CUDA error.
template <class... Pieces>
int launch_status(std::string& why, const Pieces&... pieces) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return 0;
  set_reason(why, status, pieces...);
  return static_cast<int>(status);
}

}  // namespace fact::kernel_launch

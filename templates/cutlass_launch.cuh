// Initialize + launch of a CUTLASS device-level GEMM (the 2.x GemmUniversal or
// the 3.x GemmUniversalAdapter: both expose initialize(args, workspace, stream)
// and run(stream)), with every failing status turned into a FACT ABI code and
// reason (templates/fact_export.cuh). Shared by gemm_sm80.cuh and gemm_sm90.cuh.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cutlass/cutlass.h"

namespace fact::cutlass_launch {

// `workspace` must hold Gemm::get_workspace_size(args) bytes (null when 0).
template <class Gemm>
int initialize_and_run(const typename Gemm::Arguments& args, void* workspace, cudaStream_t stream,
                       std::string& why) {
  Gemm gemm;
  cutlass::Status status = gemm.initialize(args, workspace, stream);
  if (status != cutlass::Status::kSuccess) {
    why = std::string("CUTLASS initialize: ") + cutlassGetStatusString(status);
    return 4;
  }
  status = gemm.run(stream);
  if (status != cutlass::Status::kSuccess) {
    why = std::string("CUTLASS run: ") + cutlassGetStatusString(status);
    if (cudaGetLastError() != cudaSuccess) why += " (CUDA launch error)";
    return 5;
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    why = std::string("GEMM launch: ") + cudaGetErrorString(err);
    return static_cast<int>(err);
  }
  return 0;
}

}  // namespace fact::cutlass_launch

// Exports one kernel operation through the FACT kernel C ABI
// (include/fact/kernel_abi.h). Every generated translation unit ends with
//   FACT_EXPORT_GEMM(SomeOperation, "procedural_variant_name")
// where SomeOperation is a type providing
//   static int    can_implement(const FactGemmProblem&, std::string& why);  // 0 = ok
//   static size_t workspace_size(const FactGemmProblem&);
//   static int    run(const FactGemmProblem&, void* workspace, size_t workspace_bytes,
//                     cudaStream_t stream, std::string& why);                // 0 = launched
// Hazard: nothing here may throw across the C boundary or abort; every failure
// becomes a non-zero code plus the text fact_last_error() returns.
#pragma once

#include <cuda_runtime.h>

#include <exception>
#include <string>

#include "fact/kernel_abi.h"

namespace fact::kernel_export {

inline std::string& last_error() {
  thread_local std::string text;
  return text;
}

// Runs `body` (returning int) and converts exceptions into error codes.
template <class Body>
int guarded(Body&& body) {
  try {
    last_error().clear();
    return body();
  } catch (const std::exception& e) {
    last_error() = std::string("exception: ") + e.what();
  } catch (...) {
    last_error() = "unknown exception";
  }
  return -1;
}

// Turns the sticky/non-sticky CUDA error after a launch into an ABI error.
inline int check_launch(const char* what) {
  cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return 0;
  last_error() = std::string(what) + ": " + cudaGetErrorString(status);
  return static_cast<int>(status);
}

}  // namespace fact::kernel_export

#define FACT_EXPORT_GEMM(Operation, variant_name)                                              \
  extern "C" const char* fact_variant_name(void) { return variant_name; }                    \
  extern "C" int fact_abi_version(void) { return FACT_KERNEL_ABI_VERSION; }                  \
  extern "C" const char* fact_last_error(void) {                                              \
    return ::fact::kernel_export::last_error().c_str();                                       \
  }                                                                                           \
  extern "C" int fact_gemm_can_implement(const FactGemmProblem* problem) {                    \
    return ::fact::kernel_export::guarded([&] {                                               \
      if (problem == nullptr) {                                                               \
        ::fact::kernel_export::last_error() = "null problem";                                 \
        return 1;                                                                             \
      }                                                                                       \
      return Operation::can_implement(*problem, ::fact::kernel_export::last_error());         \
    });                                                                                       \
  }                                                                                           \
  extern "C" size_t fact_gemm_workspace_size(const FactGemmProblem* problem) {               \
    size_t bytes = 0;                                                                         \
    ::fact::kernel_export::guarded([&] {                                                      \
      bytes = problem ? Operation::workspace_size(*problem) : 0;                              \
      return 0;                                                                               \
    });                                                                                       \
    return bytes;                                                                             \
  }                                                                                           \
  extern "C" int fact_gemm_run(const FactGemmProblem* problem, void* workspace,              \
                               size_t workspace_bytes, void* stream) {                        \
    return ::fact::kernel_export::guarded([&] {                                               \
      if (problem == nullptr) {                                                               \
        ::fact::kernel_export::last_error() = "null problem";                                 \
        return 1;                                                                             \
      }                                                                                       \
      if (int why = Operation::can_implement(*problem, ::fact::kernel_export::last_error()))  \
        return why;                                                                           \
      return Operation::run(*problem, workspace, workspace_bytes,                             \
                            static_cast<cudaStream_t>(stream),                                \
                            ::fact::kernel_export::last_error());                             \
    });                                                                                       \
  }

// The symbols every kernel library exports besides its operation's entry points.
#define FACT_EXPORT_LIBRARY_IDENTITY(variant_name)                                             \
  extern "C" const char* fact_variant_name(void) { return variant_name; }                    \
  extern "C" int fact_abi_version(void) { return FACT_KERNEL_ABI_VERSION; }                  \
  extern "C" const char* fact_last_error(void) {                                              \
    return ::fact::kernel_export::last_error().c_str();                                       \
  }

// LayerNorm libraries: Operation provides
//   static int can_implement(const FactLayerNormProblem&, std::string& why);  // 0 = ok
//   static int run(const FactLayerNormProblem&, cudaStream_t, std::string& why);
#define FACT_EXPORT_LAYERNORM(Operation, variant_name)                                         \
  FACT_EXPORT_LIBRARY_IDENTITY(variant_name)                                                  \
  extern "C" int fact_layernorm_can_implement(const FactLayerNormProblem* problem) {          \
    return ::fact::kernel_export::guarded([&] {                                               \
      if (problem == nullptr) {                                                               \
        ::fact::kernel_export::last_error() = "null problem";                                 \
        return 1;                                                                             \
      }                                                                                       \
      return Operation::can_implement(*problem, ::fact::kernel_export::last_error());         \
    });                                                                                       \
  }                                                                                           \
  extern "C" int fact_layernorm_run(const FactLayerNormProblem* problem, void* stream) {      \
    return ::fact::kernel_export::guarded([&] {                                               \
      if (problem == nullptr) {                                                               \
        ::fact::kernel_export::last_error() = "null problem";                                 \
        return 1;                                                                             \
      }                                                                                       \
      if (int why = Operation::can_implement(*problem, ::fact::kernel_export::last_error()))  \
        return why;                                                                           \
      return Operation::run(*problem, static_cast<cudaStream_t>(stream),                      \
                            ::fact::kernel_export::last_error());                             \
    });                                                                                       \
  }

// Attention libraries: Operation provides can_implement / workspace_size / run
// with the FactGemmProblem signatures above, on a FactAttentionProblem.
#define FACT_EXPORT_ATTENTION(Operation, variant_name)                                         \
  FACT_EXPORT_LIBRARY_IDENTITY(variant_name)                                                  \
  extern "C" int fact_attention_can_implement(const FactAttentionProblem* problem) {          \
    return ::fact::kernel_export::guarded([&] {                                               \
      if (problem == nullptr) {                                                               \
        ::fact::kernel_export::last_error() = "null problem";                                 \
        return 1;                                                                             \
      }                                                                                       \
      return Operation::can_implement(*problem, ::fact::kernel_export::last_error());         \
    });                                                                                       \
  }                                                                                           \
  extern "C" size_t fact_attention_workspace_size(const FactAttentionProblem* problem) {     \
    size_t bytes = 0;                                                                         \
    ::fact::kernel_export::guarded([&] {                                                      \
      bytes = problem ? Operation::workspace_size(*problem) : 0;                              \
      return 0;                                                                               \
    });                                                                                       \
    return bytes;                                                                             \
  }                                                                                           \
  extern "C" int fact_attention_run(const FactAttentionProblem* problem, void* workspace,    \
                                    size_t workspace_bytes, void* stream) {                   \
    return ::fact::kernel_export::guarded([&] {                                               \
      if (problem == nullptr) {                                                               \
        ::fact::kernel_export::last_error() = "null problem";                                 \
        return 1;                                                                             \
      }                                                                                       \
      if (int why = Operation::can_implement(*problem, ::fact::kernel_export::last_error()))  \
        return why;                                                                           \
      return Operation::run(*problem, workspace, workspace_bytes,                             \
                            static_cast<cudaStream_t>(stream),                                \
                            ::fact::kernel_export::last_error());                             \
    });                                                                                       \
  }

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
#include <type_traits>

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

// The entry points every exported operation shares, for any problem struct. Each
// turns a null problem into code 1 (a size query into 0 bytes) and runs inside guarded().
template <class Problem, class Body>
int on_problem(const Problem* problem, Body&& body) {
  return guarded([&] {
    if (problem == nullptr) {
      last_error() = "null problem";
      return 1;
    }
    return body(*problem);
  });
}

template <class Problem, class Size>
size_t size_of(const Problem* problem, Size&& size) {
  size_t bytes = 0;
  guarded([&] {
    bytes = problem ? size(*problem) : 0;
    return 0;
  });
  return bytes;
}

template <class Operation, class Problem>
int can_implement(const Problem* problem) {
  return on_problem(problem, [](const Problem& p) { return Operation::can_implement(p, last_error()); });
}

template <class Operation, class Problem>
size_t workspace_size(const Problem* problem) {
  return size_of(problem, [](const Problem& p) { return Operation::workspace_size(p); });
}

// Re-checks can_implement before `launch(problem)`: run is callable without it.
template <class Operation, class Problem, class Launch>
int run(const Problem* problem, Launch&& launch) {
  return on_problem(problem, [&](const Problem& p) {
    if (int why = Operation::can_implement(p, last_error())) return why;
    return launch(p);
  });
}

// GEMM operations with an operand-image format (split_gemm_pre_sm90.cuh) provide
//   static const char* image_format();
//   static size_t      image_bytes(const FactGemmProblem&, int role);
// Every other GEMM operation is wrapped by Gemm<Operation>, which rejects a problem
// that passes an image.
template <class Operation, class = void>
struct HasImages : std::false_type {};
template <class Operation>
struct HasImages<Operation, std::void_t<decltype(Operation::image_format())>> : std::true_type {};

template <class Operation>
struct Gemm : Operation {
  static int can_implement(const FactGemmProblem& pr, std::string& why) {
    if constexpr (!HasImages<Operation>::value) {
      if (pr.a_image != nullptr || pr.d_image != nullptr) {
        why = "this variant neither reads nor writes operand images (a_image / d_image must be null)";
        return 1;
      }
    }
    return Operation::can_implement(pr, why);
  }
  static const char* image_format() {
    if constexpr (HasImages<Operation>::value) return Operation::image_format();
    else return "";
  }
  static size_t image_bytes(const FactGemmProblem& pr, int role) {
    if constexpr (HasImages<Operation>::value) return Operation::image_bytes(pr, role);
    else return 0;
  }
};

template <class Operation>
size_t image_bytes(const FactGemmProblem* problem, int role) {
  return size_of(problem, [&](const FactGemmProblem& p) { return Gemm<Operation>::image_bytes(p, role); });
}

}  // namespace fact::kernel_export

// The symbols every kernel library exports besides its operation's entry points.
#define FACT_EXPORT_LIBRARY_IDENTITY(variant_name)                                             \
  extern "C" const char* fact_variant_name(void) { return variant_name; }                    \
  extern "C" int fact_abi_version(void) { return FACT_KERNEL_ABI_VERSION; }                  \
  extern "C" const char* fact_last_error(void) {                                              \
    return ::fact::kernel_export::last_error().c_str();                                       \
  }

// fact_<op>_can_implement / _workspace_size / _run of an Operation with the
// FactGemmProblem-style signatures (see the top of this file) on a Problem struct.
#define FACT_EXPORT_WORKSPACE_OPERATION(Operation, op, Problem)                                \
  extern "C" int fact_##op##_can_implement(const Problem* problem) {                          \
    return ::fact::kernel_export::can_implement<Operation>(problem);                          \
  }                                                                                           \
  extern "C" size_t fact_##op##_workspace_size(const Problem* problem) {                      \
    return ::fact::kernel_export::workspace_size<Operation>(problem);                         \
  }                                                                                           \
  extern "C" int fact_##op##_run(const Problem* problem, void* workspace,                     \
                                 size_t workspace_bytes, void* stream) {                      \
    return ::fact::kernel_export::run<Operation>(problem, [&](const Problem& p) {             \
      return Operation::run(p, workspace, workspace_bytes, static_cast<cudaStream_t>(stream), \
                            ::fact::kernel_export::last_error());                             \
    });                                                                                       \
  }

#define FACT_EXPORT_GEMM(Operation, variant_name)                                              \
  FACT_EXPORT_LIBRARY_IDENTITY(variant_name)                                                  \
  FACT_EXPORT_WORKSPACE_OPERATION(::fact::kernel_export::Gemm<Operation>, gemm, FactGemmProblem) \
  extern "C" const char* fact_gemm_image_format(void) {                                       \
    return ::fact::kernel_export::Gemm<Operation>::image_format();                            \
  }                                                                                           \
  extern "C" size_t fact_gemm_image_bytes(const FactGemmProblem* problem, int role) {         \
    return ::fact::kernel_export::image_bytes<Operation>(problem, role);                      \
  }

// LayerNorm libraries: Operation provides
//   static int can_implement(const FactLayerNormProblem&, std::string& why);  // 0 = ok
//   static int run(const FactLayerNormProblem&, cudaStream_t, std::string& why);
// and Images (layernorm_image.cuh ImageWriters, or layernorm.cuh NoImages)
//   static const char* formats();
//   static size_t image_bytes(const FactLayerNormProblem&, const char* format);
//   static int can_implement(const FactLayerNormProblem&, const char* format, std::string& why);
//   static int run(const FactLayerNormProblem&, const char* format, void* image, cudaStream_t,
//                  std::string& why);  // checks can_implement itself
#define FACT_EXPORT_LAYERNORM(Operation, Images, variant_name)                                 \
  FACT_EXPORT_LIBRARY_IDENTITY(variant_name)                                                  \
  extern "C" int fact_layernorm_can_implement(const FactLayerNormProblem* problem) {          \
    return ::fact::kernel_export::can_implement<Operation>(problem);                          \
  }                                                                                           \
  extern "C" int fact_layernorm_run(const FactLayerNormProblem* problem, void* stream) {      \
    return ::fact::kernel_export::run<Operation>(problem, [&](const FactLayerNormProblem& p) { \
      return Operation::run(p, static_cast<cudaStream_t>(stream),                             \
                            ::fact::kernel_export::last_error());                             \
    });                                                                                       \
  }                                                                                           \
  extern "C" const char* fact_layernorm_image_formats(void) { return Images::formats(); }    \
  extern "C" size_t fact_layernorm_image_bytes(const FactLayerNormProblem* problem,           \
                                               const char* format) {                          \
    return ::fact::kernel_export::size_of(                                                    \
        problem, [&](const FactLayerNormProblem& p) { return Images::image_bytes(p, format); }); \
  }                                                                                           \
  extern "C" int fact_layernorm_image_can_implement(const FactLayerNormProblem* problem,      \
                                                    const char* format) {                     \
    return ::fact::kernel_export::on_problem(problem, [&](const FactLayerNormProblem& p) {    \
      return Images::can_implement(p, format, ::fact::kernel_export::last_error());           \
    });                                                                                       \
  }                                                                                           \
  extern "C" int fact_layernorm_run_image(const FactLayerNormProblem* problem, const char* format, \
                                          void* image, void* stream) {                        \
    return ::fact::kernel_export::on_problem(problem, [&](const FactLayerNormProblem& p) {    \
      return Images::run(p, format, image, static_cast<cudaStream_t>(stream),                 \
                         ::fact::kernel_export::last_error());                                \
    });                                                                                       \
  }

// Attention libraries: Operation provides can_implement / workspace_size / run
// with the FactGemmProblem signatures above, on a FactAttentionProblem.
#define FACT_EXPORT_ATTENTION(Operation, variant_name)                                         \
  FACT_EXPORT_LIBRARY_IDENTITY(variant_name)                                                  \
  FACT_EXPORT_WORKSPACE_OPERATION(Operation, attention, FactAttentionProblem)

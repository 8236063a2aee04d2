// Helpers shared by the standalone GPU checks of FACT kernel libraries
// (split_gemm_check.cu, handoff_check.cu): CUDA / cuBLAS status checks that throw,
// the C-ABI entry points of a library, seeded fills and poison, and median / mean.
#pragma once

#include <CLI/CLI.hpp>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fact/kernel_abi.h"

namespace fact_check {

#define CUDA_CHECK(x)                                                                        \
  do {                                                                                       \
    cudaError_t e_ = (x);                                                                    \
    if (e_ != cudaSuccess)                                                                   \
      throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_) + " at line " + \
                               std::to_string(__LINE__));                                    \
  } while (0)
#define CUBLAS_CHECK(x)                                                                     \
  do {                                                                                      \
    cublasStatus_t s_ = (x);                                                                \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                        \
      throw std::runtime_error(std::string(#x) + ": cublas status " + std::to_string(s_) + \
                               " at line " + std::to_string(__LINE__));                     \
  } while (0)

// A kernel library's GEMM entry points (include/fact/kernel_abi.h), bound by open_library().
struct Lib {
  const char* (*name)();
  int (*abi)();
  int (*can)(const FactGemmProblem*);
  size_t (*ws)(const FactGemmProblem*);
  int (*run)(const FactGemmProblem*, void*, size_t, void*);
  const char* (*err)();
  const char* (*image_format)();
  size_t (*image_bytes)(const FactGemmProblem*, int);
};

template <class F>
void bind(void* h, const char* sym, F& f) {
  f = reinterpret_cast<F>(dlsym(h, sym));
  if (!f) throw std::runtime_error(std::string("missing symbol ") + sym);
}

__device__ __forceinline__ uint64_t mix(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
__device__ __forceinline__ double unit(uint64_t h) { return ((h >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

// normal != 0: N(0,1) by Box-Muller, else U[0,1).
__global__ void fill(float* p, size_t n, uint64_t seed, int normal) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t h = mix(seed * 0x9e3779b97f4a7c15ULL + i);
    if (normal) {
      double u1 = unit(h), u2 = unit(mix(h + 0x1234567ULL));
      p[i] = static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    } else {
      p[i] = static_cast<float>(unit(h) * (1.0 - 1e-7));  // strictly < 1 after rounding
    }
  }
}
__global__ void fill_nan(float* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = __int_as_float(0x7fc00000);
}
inline double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}
inline double mean(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}


// (median, mean) in ms of `reps` runs of `fn` on `stream` after 3 warm-up runs, each timed
// with CUDA events after overwriting `flush` (a buffer larger than L2) so every run starts
// with a cold L2.
template <class Fn>
std::pair<double, double> time_cold_l2(Fn&& fn, int reps, cudaStream_t stream, void* flush, size_t flush_bytes) {
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    CUDA_CHECK(cudaMemsetAsync(flush, r & 0xff, flush_bytes, stream));
    CUDA_CHECK(cudaEventRecord(e0, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(e1, stream));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float t;
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  return {median(ms), mean(ms)};
}

// The device a check runs on: its properties, a stream, a buffer larger than L2 that
// time() overwrites before every timed run (time_cold_l2), and a fill grid of 4 CTAs per SM.
struct CheckDevice {
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  void* flush = nullptr;
  size_t flush_bytes = size_t(256) << 20;
  int grid = 0;

  CheckDevice() {
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    CUDA_CHECK(cudaStreamCreate(&stream));
    CUDA_CHECK(cudaMalloc(&flush, flush_bytes));
    grid = 4 * prop.multiProcessorCount;
  }
  template <class Fn>
  std::pair<double, double> time(Fn&& fn, int reps) const {
    return time_cold_l2(fn, reps, stream, flush, flush_bytes);
  }
};

// dlopen with RTLD_NOW | RTLD_LOCAL; throws with dlerror() when it fails.
inline void* open_or_throw(const std::string& path) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw std::runtime_error(std::string("dlopen: ") + dlerror());
  return h;
}

// Adds the options every check shares to `app`: --lib (required), repeated --shape
// "a,b,c,d" (four integers; `what` names them in the help), --time, --reps (>= 50).
inline void add_common_options(CLI::App& app, std::string& lib, std::vector<std::array<int64_t, 4>>& shapes,
                               bool& time, int& reps, const std::string& what) {
  app.add_option("--lib", lib, "kernel library (.so) with the FACT C ABI")->required()->check(CLI::ExistingFile);
  app.add_option_function<std::vector<std::string>>(
         "--shape",
         [&shapes, what](const std::vector<std::string>& values) {
           for (const std::string& v : values) {
             std::array<int64_t, 4> s{};
             if (std::sscanf(v.c_str(), "%ld,%ld,%ld,%ld", &s[0], &s[1], &s[2], &s[3]) != 4)
               throw CLI::ValidationError("--shape", "wants " + what + ", got '" + v + "'");
             shapes.push_back(s);
           }
         },
         what + " (repeatable)")
      ->required()
      ->take_all()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--time", time, "time with CUDA events and an L2 flush");
  app.add_option("--reps", reps, "timed runs (>= 50)")->check(CLI::Range(50, 100000));
}

// Parses argv into `app`; exits 0 for --help, 2 (with CLI11's message) for a usage error.
inline int parse_or_exit(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? -1 : 2;
  }
  return 0;
}

// body() (the check's exit status), or 2 with "tool: message" on stderr when it throws
// (a CUDA / cuBLAS / library error).
template <class Body>
int run_reporting(const char* tool, Body&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    return 2;
  }
}

// dlopens `path` and binds every GEMM entry point; throws on a missing symbol or another ABI.
inline Lib open_library(const std::string& path) {
  void* h = open_or_throw(path);
  Lib L;
  bind(h, "fact_variant_name", L.name);
  bind(h, "fact_abi_version", L.abi);
  bind(h, "fact_gemm_can_implement", L.can);
  bind(h, "fact_gemm_workspace_size", L.ws);
  bind(h, "fact_gemm_run", L.run);
  bind(h, "fact_last_error", L.err);
  bind(h, "fact_gemm_image_format", L.image_format);
  bind(h, "fact_gemm_image_bytes", L.image_bytes);
  if (L.abi() != FACT_KERNEL_ABI_VERSION) throw std::runtime_error("ABI version mismatch");
  return L;
}

}  // namespace fact_check

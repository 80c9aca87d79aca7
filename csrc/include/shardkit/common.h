// Shared basics of the torch-free native core: the dtype enum, the error type
// and the check macro, and the host/device qualifier used by the math headers.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define SHARDKIT_HD __host__ __device__ __forceinline__
#define SHARDKIT_HD_METHOD __host__ __device__ __forceinline__
#else
// static: every translation unit keeps its own copy. The kernels are compiled
// several times with different ISA flags (scalar, AVX2, AVX-512); with
// external linkage the linker could keep an AVX-512 copy of a helper and call
// it from the scalar path on a CPU without AVX-512.
#define SHARDKIT_HD static inline
// Members of class templates: each ISA instantiates them with its own vector
// type, so they never collide across translation units.
#define SHARDKIT_HD_METHOD inline
#endif

namespace shardkit {

// Element types crossing the Python/native boundary. The numeric values are
// part of the binding ABI: python/shardkit/_native.py mirrors them.
enum class DType : int32_t {
  kFloat32 = 0,
  kBFloat16 = 1,
  kFloat16 = 2,
  kFloat64 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kUInt8 = 6,
};

inline int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 2;
    case DType::kFloat64: return 8;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kUInt8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat16: return "float16";
    case DType::kFloat64: return "float64";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kUInt8: return "uint8";
  }
  return "unknown";
}

// Raised by SHARDKIT_CHECK; pybind11 turns std::invalid_argument into
// Python's ValueError, so a broken invariant never becomes a segfault.
class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <typename... Args>
[[noreturn]] void fail(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream out;
  ((out << args), ...);
  out << " (check `" << cond << "` failed at " << file << ":" << line << ")";
  throw Error(out.str());
}
}  // namespace detail

}  // namespace shardkit

#define SHARDKIT_CHECK(cond, ...)                                              \
  do {                                                                         \
    if (!(cond)) ::shardkit::detail::fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)

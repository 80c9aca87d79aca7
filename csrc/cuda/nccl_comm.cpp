// NCCL wrappers (see shardkit/nccl.h). The handful of NCCL entry points we
// call are declared here with NCCL's stable C ABI and resolved with dlsym.
// Where nccl.h was found at build time, the enum values are checked against it.
#include "shardkit/nccl.h"

#include <dlfcn.h>

#include <cstring>
#include <mutex>

#if defined(SHARDKIT_HAS_NCCL_HEADER)
#include <nccl.h>
#endif

namespace shardkit::nccl {
namespace {

// NCCL's ABI: ncclResult_t, ncclDataType_t and ncclRedOp_t are C enums (int).
enum NcclType : int { kInt32 = 2, kInt64 = 4, kFloat16 = 6, kFloat32 = 7, kFloat64 = 8, kBFloat16 = 9 };
enum NcclOp : int { kSum = 0, kMax = 2, kMin = 3, kAvg = 4 };
struct UniqueId {
  char internal[kUniqueIdBytes];
};
using CommHandle = void*;

#if defined(SHARDKIT_HAS_NCCL_HEADER)
static_assert(sizeof(ncclUniqueId) == sizeof(UniqueId), "ncclUniqueId size changed");
static_assert(ncclFloat32 == kFloat32 && ncclBfloat16 == kBFloat16 && ncclInt64 == kInt64 && ncclFloat16 == kFloat16,
              "ncclDataType_t values changed");
static_assert(ncclSum == kSum && ncclMax == kMax && ncclMin == kMin && ncclAvg == kAvg, "ncclRedOp_t values changed");
#endif

struct Api {
  void* lib = nullptr;
  const char* (*get_error_string)(int) = nullptr;
  int (*get_version)(int*) = nullptr;
  int (*get_unique_id)(UniqueId*) = nullptr;
  int (*comm_init_rank)(CommHandle*, int, UniqueId, int) = nullptr;
  int (*comm_destroy)(CommHandle) = nullptr;
  int (*comm_abort)(CommHandle) = nullptr;
  int (*all_reduce)(const void*, void*, size_t, int, int, CommHandle, void*) = nullptr;
  int (*reduce_scatter)(const void*, void*, size_t, int, int, CommHandle, void*) = nullptr;
  int (*all_gather)(const void*, void*, size_t, int, CommHandle, void*) = nullptr;
  int (*broadcast)(const void*, void*, size_t, int, int, CommHandle, void*) = nullptr;
  int (*reduce)(const void*, void*, size_t, int, int, int, CommHandle, void*) = nullptr;
};

std::mutex g_mutex;
Api g_api;

template <typename Fn>
bool resolve(void* lib, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  return *out != nullptr;
}

const Api& api() {
  SHARDKIT_CHECK(g_api.lib != nullptr, "NCCL is not loaded: call shardkit._C_cuda.nccl_load() first");
  return g_api;
}

void check(int result, const char* what) {
  if (result != 0) {
    throw CommError(std::string("shardkit.comm.nccl: ") + what + " failed: " + g_api.get_error_string(result) +
                    " (ncclResult_t " + std::to_string(result) + ")");
  }
}

int nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return kFloat32;
    case DType::kFloat64: return kFloat64;
    case DType::kBFloat16: return kBFloat16;
    case DType::kFloat16: return kFloat16;
    case DType::kInt32: return kInt32;
    case DType::kInt64: return kInt64;
    default: SHARDKIT_CHECK(false, "dtype: NCCL collectives support float32, float64, bfloat16, float16, int32 and int64, got ", dtype_name(dtype));
  }
  return -1;
}

int nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return kSum;
    case ReduceOp::kAvg: return kAvg;
    case ReduceOp::kMax: return kMax;
    case ReduceOp::kMin: return kMin;
  }
  SHARDKIT_CHECK(false, "op: expected sum, avg, max or min");
  return -1;
}

size_t count(int64_t n) {
  SHARDKIT_CHECK(n >= 0, "numel: expected >= 0, got ", n);
  return static_cast<size_t>(n);
}

}  // namespace

std::string load(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_api.lib != nullptr) return "";
  const char* name = path.empty() ? "libnccl.so.2" : path.c_str();
  void* lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
  if (lib == nullptr) return std::string("dlopen(") + name + ") failed: " + dlerror();
  Api a;
  a.lib = lib;
  const bool ok = resolve(lib, "ncclGetErrorString", &a.get_error_string) && resolve(lib, "ncclGetVersion", &a.get_version) &&
                  resolve(lib, "ncclGetUniqueId", &a.get_unique_id) && resolve(lib, "ncclCommInitRank", &a.comm_init_rank) &&
                  resolve(lib, "ncclCommDestroy", &a.comm_destroy) && resolve(lib, "ncclCommAbort", &a.comm_abort) &&
                  resolve(lib, "ncclAllReduce", &a.all_reduce) && resolve(lib, "ncclReduceScatter", &a.reduce_scatter) &&
                  resolve(lib, "ncclAllGather", &a.all_gather) && resolve(lib, "ncclBroadcast", &a.broadcast) &&
                  resolve(lib, "ncclReduce", &a.reduce);
  if (!ok) {
    dlclose(lib);
    return std::string(name) + " lacks an NCCL 2.x entry point";
  }
  g_api = a;
  return "";
}

bool loaded() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_api.lib != nullptr;
}

int version() {
  if (!loaded()) return 0;
  int v = 0;
  check(api().get_version(&v), "ncclGetVersion");
  return v;
}

std::string unique_id() {
  UniqueId id;
  check(api().get_unique_id(&id), "ncclGetUniqueId");
  return std::string(id.internal, sizeof(id.internal));
}

Comm::Comm(const std::string& id_bytes, int world, int rank) : world_(world), rank_(rank) {
  SHARDKIT_CHECK(id_bytes.size() == kUniqueIdBytes, "unique_id: expected ", kUniqueIdBytes, " bytes, got ", id_bytes.size());
  SHARDKIT_CHECK(world >= 1 && rank >= 0 && rank < world, "rank: expected 0..", world - 1, ", got ", rank);
  UniqueId id;
  std::memcpy(id.internal, id_bytes.data(), sizeof(id.internal));
  CommHandle handle = nullptr;
  check(api().comm_init_rank(&handle, world, id, rank), "ncclCommInitRank");
  comm_ = handle;
}

Comm::~Comm() {
  if (comm_ != nullptr) api().comm_destroy(comm_);
}

void Comm::abort() {
  if (comm_ != nullptr) api().comm_abort(comm_);
  comm_ = nullptr;
}

#define SHARDKIT_NCCL_LIVE() SHARDKIT_CHECK(comm_ != nullptr, "the NCCL communicator was aborted")

void Comm::all_reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, void* stream) {
  SHARDKIT_NCCL_LIVE();
  check(api().all_reduce(in, out, count(n), nccl_type(dtype), nccl_op(op), comm_, stream), "ncclAllReduce");
}

void Comm::reduce_scatter(void* out, const void* in, int64_t n_out, DType dtype, ReduceOp op, void* stream) {
  SHARDKIT_NCCL_LIVE();
  check(api().reduce_scatter(in, out, count(n_out), nccl_type(dtype), nccl_op(op), comm_, stream), "ncclReduceScatter");
}

void Comm::all_gather(void* out, const void* in, int64_t n_in, DType dtype, void* stream) {
  SHARDKIT_NCCL_LIVE();
  check(api().all_gather(in, out, count(n_in), nccl_type(dtype), comm_, stream), "ncclAllGather");
}

void Comm::broadcast(void* data, int64_t n, DType dtype, int root, void* stream) {
  SHARDKIT_NCCL_LIVE();
  SHARDKIT_CHECK(root >= 0 && root < world_, "src: expected a rank in 0..", world_ - 1, ", got ", root);
  check(api().broadcast(data, data, count(n), nccl_type(dtype), root, comm_, stream), "ncclBroadcast");
}

void Comm::reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, int root, void* stream) {
  SHARDKIT_NCCL_LIVE();
  SHARDKIT_CHECK(root >= 0 && root < world_, "dst: expected a rank in 0..", world_ - 1, ", got ", root);
  check(api().reduce(in, out, count(n), nccl_type(dtype), nccl_op(op), root, comm_, stream), "ncclReduce");
}

}  // namespace shardkit::nccl

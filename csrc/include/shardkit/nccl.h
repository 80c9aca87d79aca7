// NCCL-backed collectives for GPU tensors, with libnccl loaded at run time
// (dlopen), so the CUDA module needs neither nccl.h nor libnccl to build,
// and uses the NCCL that torch already loaded when there is one.
#pragma once

#include <cstdint>
#include <string>

#include "shardkit/comm.h"

namespace shardkit::nccl {

constexpr int kUniqueIdBytes = 128;

// Loads libnccl (`path`, or "libnccl.so.2" from the loader's search path,
// which finds the copy torch has loaded). Returns "" on success, else why not.
std::string load(const std::string& path);
bool loaded();
// NCCL's version code (e.g. 22703 for 2.27.3); 0 if not loaded.
int version();
// A fresh unique id (rank 0 creates it, the others receive it out of band).
std::string unique_id();

class Comm {
 public:
  Comm(const std::string& unique_id, int world, int rank);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  // Enqueue on `stream` (a cudaStream_t; null = the legacy default stream).
  void all_reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, void* stream);
  void reduce_scatter(void* out, const void* in, int64_t n_out, DType dtype, ReduceOp op, void* stream);
  void all_gather(void* out, const void* in, int64_t n_in, DType dtype, void* stream);
  void broadcast(void* data, int64_t n, DType dtype, int root, void* stream);
  void reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, int root, void* stream);
  // Abandons pending work (for a peer that died); the communicator is unusable afterwards.
  void abort();

 private:
  void* comm_ = nullptr;
  int world_, rank_;
};

}  // namespace shardkit::nccl

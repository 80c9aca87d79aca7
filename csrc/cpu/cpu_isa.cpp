// Run-time choice of the CPU kernel path. Never -march=native: one build
// runs on every x86-64 CPU and uses the widest instructions it has.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "cpu/cpu_isa.h"

namespace shardkit {
namespace {

bool cpu_has(const char* isa) {
#if defined(SHARDKIT_X86)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512") == 0) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
  if (std::strcmp(isa, "avx2") == 0) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
#endif
  return std::strcmp(isa, "scalar") == 0;
}

bool cpu_has_avx512_bf16() {
#if defined(SHARDKIT_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

std::mutex g_isa_mutex;
std::string g_isa;  // empty until first use
OptimIsa g_optim;

void select(const std::string& isa) {
  SHARDKIT_CHECK(isa == "avx512" || isa == "avx2" || isa == "scalar",
                 "cpu isa: expected one of 'avx512', 'avx2', 'scalar', got '", isa, "'");
  SHARDKIT_CHECK(cpu_has(isa.c_str()), "cpu isa: this CPU does not support '", isa, "'");
#if defined(SHARDKIT_X86)
  if (isa == "avx512") g_optim = optim_isa_avx512(cpu_has_avx512_bf16());
  else if (isa == "avx2") g_optim = optim_isa_avx2();
  else g_optim = optim_isa_scalar();
#else
  g_optim = optim_isa_scalar();
#endif
  g_isa = isa;
}

void ensure_selected() {
  if (!g_isa.empty()) return;
  const char* forced = std::getenv("SHARDKIT_CPU_ISA");
  if (forced && *forced) {
    select(forced);
  } else {
    select(cpu_has("avx512") ? "avx512" : cpu_has("avx2") ? "avx2" : "scalar");
  }
}

}  // namespace

bool cpu_isa_available(const char* isa) { return cpu_has(isa); }

void set_cpu_isa(const char* isa) {
  std::lock_guard<std::mutex> lock(g_isa_mutex);
  select(isa);
}

const char* get_cpu_isa() {
  std::lock_guard<std::mutex> lock(g_isa_mutex);
  ensure_selected();
  return g_isa.c_str();
}

bool cpu_isa_native_bf16() { return std::string(get_cpu_isa()) == "avx512" && cpu_has_avx512_bf16(); }

OptimIsa current_optim_isa() {
  std::lock_guard<std::mutex> lock(g_isa_mutex);
  ensure_selected();
  return g_optim;
}

}  // namespace shardkit

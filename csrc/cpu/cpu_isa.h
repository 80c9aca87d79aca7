// The CPU kernel path in use (see cpu_isa.cpp).
#pragma once

#include "cpu/optim_isa.h"

namespace shardkit {

// The optimizer span table of the selected path.
OptimIsa current_optim_isa();
// True when the AVX-512 path converts to bf16 with vcvtneps2bf16.
bool cpu_isa_native_bf16();

}  // namespace shardkit

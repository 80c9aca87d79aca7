// The collectives' reduction loops compiled for the avx512 path (see comm_reduce_impl.h).
#define SHARDKIT_REDUCE_NS reduce_avx512
#include "cpu/comm_reduce_impl.h"

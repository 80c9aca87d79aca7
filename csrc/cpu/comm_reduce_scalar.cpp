// The collectives' reduction loops compiled for the scalar path (see comm_reduce_impl.h).
#define SHARDKIT_REDUCE_NS reduce_scalar
#include "cpu/comm_reduce_impl.h"

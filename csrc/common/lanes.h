// Internal (not installed): particles trained concurrently on the CPU, one thread ("lane") each.
//
// A small model leaves most of a two-thread intra-op pool idle (synchronisation after every small
// kernel, kernels too small to split well), so on the CPU it is faster to give each particle a
// thread of its own and run the particles side by side. run_lanes runs body(0..lanes-1) in an
// OpenMP team whose threads each allow themselves one thread: inside it ATen's parallel_for, MKL
// and oneDNN run serially, so every lane computes with exactly one thread and the lanes do not
// oversubscribe the cores. Thread-local ATen state (grad mode, dispatch keys) is the caller's in
// every lane. An exception in a lane is rethrown in the caller after all lanes have finished (the
// lowest lane first).
#pragma once

#include <cstdint>
#include <functional>

#include "swamp/export.h"

namespace swamp {

// Whether lanes run concurrently here (torch and this library built with OpenMP, and ATen's
// parallel_for serial inside an OpenMP team); otherwise run_lanes runs the lanes one after the
// other.
SWAMP_API bool lanes_concurrent();

SWAMP_API void run_lanes(int64_t lanes, const std::function<void(int64_t)>& body);

}  // namespace swamp

#include "lanes.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <exception>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace swamp {

bool lanes_concurrent() {
#ifdef _OPENMP
  static const bool ok = [] {
    // Probe once: a team of two that ATen recognises as a parallel region.
    bool serial_inside = true;
    int team = 1;
#pragma omp parallel num_threads(2)
    {
#pragma omp master
      {
        team = omp_get_num_threads();
        serial_inside = at::in_parallel_region();
      }
    }
    return team == 2 && serial_inside;
  }();
  return ok;
#else
  return false;
#endif
}

void run_lanes(int64_t lanes, const std::function<void(int64_t)>& body) {
  if (lanes <= 1 || !lanes_concurrent()) {
    for (int64_t l = 0; l < lanes; ++l) body(l);
    return;
  }
#ifdef _OPENMP
  const at::ThreadLocalState state;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(lanes));
#pragma omp parallel num_threads(static_cast<int>(lanes))
  {
    const at::ThreadLocalStateGuard guard(state);
    // ATen initialises a thread's OpenMP setting at its first parallel_for (to the intra-op
    // thread count), in libtorch and in this library alike; let that happen before the lane
    // sets its own, the first time an OpenMP thread runs a lane.
    thread_local bool aten_thread_ready = false;
    if (!aten_thread_ready) {
      at::parallel_for(0, 2, 1, [](int64_t, int64_t) {});  // this library's parallel_for
      at::empty({1 << 17}, at::kFloat).fill_(0.0f);        // one inside libtorch
      aten_thread_ready = true;
    }
    // One thread for anything that asks OpenMP how many it may use inside the lane: oneDNN sizes
    // its primitives by it, and a convolution planned for two threads but run serially in a
    // nested region waits forever at its internal barrier. (This implicit task's setting ends
    // with the region.)
    omp_set_num_threads(1);
    // A team smaller than asked for (thread limits): its threads take the missing lanes in turn.
    const int64_t team = omp_get_num_threads();
    for (int64_t l = omp_get_thread_num(); l < lanes; l += team) {
      try {
        body(l);
      } catch (...) {
        errors[static_cast<size_t>(l)] = std::current_exception();
      }
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
#endif
}

}  // namespace swamp

// Fork/join over a range on std::threads started per call, the caller's thread included: the
// matcher's threading (GEMM shares, gathers, pair copies: static contiguous parts, so a thread
// that gets descheduled on a busy machine delays only its own part) and the LAP batch's (items
// from an atomic counter). The LAP's split passes use a persistent helper instead
// (lap/lap_parallel.hpp): they are 0.05-0.3 ms long, a thread start ~50 us.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace trajtransfer::parallel {

/// Blocks the calling thread until the process exits (for threads that must not go on while the
/// process shuts down: see bindings/gil.hpp and blas::sgemm).
[[noreturn]] inline void park_until_exit() noexcept {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
}

/// Threads a split may use (set_blas_threads / match.set_num_threads; 0 = hardware concurrency).
inline std::atomic<int>& threads_setting() {
  static std::atomic<int> threads{0};
  return threads;
}

inline int hardware_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

inline int threads() {
  const int t = threads_setting().load(std::memory_order_relaxed);
  return t > 0 ? t : hardware_threads();
}

/// Run f(i0, i1) over [0, n) in `parts` contiguous parts (parts <= 1: on the caller's thread).
template <class F>
void run_parts(std::int64_t n, int parts, F&& f) {
  if (parts <= 1 || n < 2) {
    f(std::int64_t{0}, n);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(parts - 1));
  for (int p = 1; p < parts; ++p) {
    const std::int64_t i0 = n * p / parts, i1 = n * (p + 1) / parts;
    try {
      workers.emplace_back([&f, i0, i1] { f(i0, i1); });
    } catch (...) {  // no thread available: do that part here instead
      f(i0, i1);
    }
  }
  f(std::int64_t{0}, n / parts);
  for (std::thread& w : workers) w.join();
}

/// Run f(item) for every item in [0, count) on up to `threads` threads (caller included), items
/// handed out one at a time through an atomic counter, so that items of uneven cost (LAP batch
/// problems) balance themselves. `per_thread()` runs once on each thread first and its result
/// lives until that thread's last item (e.g. an RAII marker).
template <class PerThread, class F>
void run_dynamic(std::int64_t count, int threads, PerThread&& per_thread, F&& f) {
  const int parts = static_cast<int>(
      std::clamp<std::int64_t>(threads, 1, std::max<std::int64_t>(count, 1)));
  std::atomic<std::int64_t> next{0};
  run_parts(parts, parts, [&](std::int64_t, std::int64_t) {
    const auto scope = per_thread();
    (void)scope;
    for (std::int64_t it = next.fetch_add(1); it < count; it = next.fetch_add(1)) f(it);
  });
}

/// Copies and transposes below this many floats stay on one thread (a thread start costs about
/// as much as copying 16 K floats; the split pays off on the MB-sized tensors of conv nets, where
/// page faults on first touch dominate and scale with cores).
constexpr std::int64_t kParallelFloats = std::int64_t{1} << 20;

/// Parts for a memory-bound job of `floats` floats over n items (at least `min_items` each).
inline int copy_parts(std::int64_t floats, std::int64_t n, std::int64_t min_items = 1) {
  if (floats < kParallelFloats) return 1;
  return static_cast<int>(std::max<std::int64_t>(
      1, std::min<std::int64_t>(threads(), n / std::max<std::int64_t>(min_items, 1))));
}

/// Run f(item, scratch) for every item in [0, count), each item whole on one thread, over
/// contiguous ranges balanced by work(item) (in floats; one thread below kParallelFloats).
/// `Scratch` is default-constructed once per thread. Results that items write to their own
/// slots are therefore independent of the thread count.
template <class Scratch, class Work, class F>
void run_items(std::int64_t count, Work&& work, F&& f) {
  std::vector<double> prefix(static_cast<std::size_t>(count) + 1, 0.0);
  for (std::int64_t it = 0; it < count; ++it) {
    prefix[static_cast<std::size_t>(it) + 1] =
        prefix[static_cast<std::size_t>(it)] + static_cast<double>(work(it));
  }
  const double total = prefix.back();
  const int parts = copy_parts(static_cast<std::int64_t>(total), count);
  // Part p takes the items whose work starts in its share [p, p + 1) * total / parts.
  const auto first_item = [&](int p) -> std::int64_t {
    if (p <= 0) return 0;
    if (p >= parts) return count;
    const double bound = total * static_cast<double>(p) / static_cast<double>(parts);
    return static_cast<std::int64_t>(
        std::lower_bound(prefix.begin(), prefix.end() - 1, bound) - prefix.begin());
  };
  run_parts(parts, parts, [&](std::int64_t p0, std::int64_t p1) {
    for (std::int64_t p = p0; p < p1; ++p) {
      Scratch scratch{};
      const std::int64_t i1 = first_item(static_cast<int>(p) + 1);
      for (std::int64_t it = first_item(static_cast<int>(p)); it < i1; ++it) f(it, scratch);
    }
  });
}

}  // namespace trajtransfer::parallel

// Development-only profile of the dense LAP solver: wall time per solver phase and counts of
// events inside the phases, summed over solves. Compiled out unless TT_LAP_PROFILE is defined
// (e.g. a standalone C++ driver built with -DTT_LAP_PROFILE that links lap_dense.cpp): the
// macros below then expand to nothing, so the hot loops carry no profiling code.
#pragma once

#ifdef TT_LAP_PROFILE
#include <atomic>
#include <chrono>
#include <cstdio>
#endif

namespace trajtransfer::lap::profile {

/// Timed phases of one solve, in solve order.
enum class Phase {
  warm_pass,    // warm start: greedy assignment at the previous prices
  warm_arr,     // warm start: augmenting row reduction after it
  colmin,       // cold start: column minima
  reduce,       // cold start: reduction transfer
  cold_arr,     // cold start: augmenting row reduction
  augment,      // shortest augmenting paths for the rows still free
  verify,       // float32 solves: the float64 check (and exact-mode repair)
  resolve64,    // float32 solves: the float64 re-solve when the check fails
  count
};

/// Counted events.
enum class Event {
  arr_steps,         // rows examined by augmenting row reduction
  cache_miss,        // row-cache certificates that failed (full row rescans)
  ties,              // ARR steps that met a tie and took another column
  arr_in,            // free rows entering augmenting row reduction
  nontight,          // warm start: rows whose previous column was no longer tight
  free_after_pass0,  // rows still free after ARR pass 0, 1, 2 and 3+
  free_after_pass1,
  free_after_pass2,
  free_after_pass3,
  lb64_full,         // float64 row bounds computed by a full row scan (no cache proof)
  chunks_caller,     // split passes: row chunks done by the calling thread
  chunks_helper,     // ... and by the helper thread
  count
};

/// free_after_pass0 .. free_after_pass3 for ARR pass `pass` (3 and later share the last).
constexpr Event free_after_pass(int pass) {
  return static_cast<Event>(static_cast<int>(Event::free_after_pass0) + (pass < 3 ? pass : 3));
}

#ifdef TT_LAP_PROFILE
inline const char* const kPhaseNames[] = {"warm_pass", "warm_arr", "colmin", "reduce",
                                          "cold_arr",  "augment",  "verify", "resolve64"};
inline const char* const kEventNames[] = {
    "arr_steps", "cache_miss", "ties",    "arr_in",   "nontight",      "free_p0",
    "free_p1",   "free_p2",    "free_p3", "lb64_full", "chunks_caller", "chunks_helper"};
static_assert(sizeof(kPhaseNames) / sizeof(*kPhaseNames) == static_cast<int>(Phase::count));
static_assert(sizeof(kEventNames) / sizeof(*kEventNames) == static_cast<int>(Event::count));

// Relaxed atomics: a split pass counts from two threads. A load and a store (not fetch_add) keep
// the increments cheap inside the loops being timed; a count only one thread touches (every one
// but lb64_full) stays exact.
inline std::atomic<double> g_phase_ms[static_cast<int>(Phase::count)];
inline std::atomic<long> g_phase_runs[static_cast<int>(Phase::count)];
inline std::atomic<long> g_events[static_cast<int>(Event::count)];

inline void add(Event e, long n) {
  auto& c = g_events[static_cast<int>(e)];
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

/// Adds the wall time of its scope to a phase.
class PhaseTimer {
 public:
  explicit PhaseTimer(Phase p) : p_(static_cast<int>(p)) {}
  ~PhaseTimer() {
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
    g_phase_ms[p_].store(g_phase_ms[p_].load(std::memory_order_relaxed) + ms,
                         std::memory_order_relaxed);
    g_phase_runs[p_].fetch_add(1, std::memory_order_relaxed);
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  int p_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

inline double phase_ms(Phase p) { return g_phase_ms[static_cast<int>(p)].load(); }
inline long phase_runs(Phase p) { return g_phase_runs[static_cast<int>(p)].load(); }
inline long events(Event e) { return g_events[static_cast<int>(e)].load(); }

inline void reset() {
  for (auto& x : g_phase_ms) x.store(0.0);
  for (auto& x : g_phase_runs) x.store(0);
  for (auto& x : g_events) x.store(0);
}

/// Prints the phases that ran (ms per solve) and the non-zero events (per solve), then resets.
inline void dump(int solves) {
  for (int k = 0; k < static_cast<int>(Phase::count); ++k) {
    if (g_phase_runs[k].load() != 0) {
      std::printf("  %-13s %8.3f ms\n", kPhaseNames[k], g_phase_ms[k].load() / solves);
    }
  }
  for (int k = 0; k < static_cast<int>(Event::count); ++k) {
    if (g_events[k].load() != 0) {
      std::printf("  %-13s %10.1f\n", kEventNames[k], double(g_events[k].load()) / solves);
    }
  }
  reset();
}
#endif

}  // namespace trajtransfer::lap::profile

#ifdef TT_LAP_PROFILE
#define TT_LAP_PROFILE_CONCAT2(a, b) a##b
#define TT_LAP_PROFILE_CONCAT(a, b) TT_LAP_PROFILE_CONCAT2(a, b)
/// Times the rest of the enclosing scope as phase `name` (a trajtransfer::lap::profile::Phase).
#define TT_LAP_PROFILE_PHASE(name)                                      \
  ::trajtransfer::lap::profile::PhaseTimer TT_LAP_PROFILE_CONCAT(       \
      tt_lap_profile_timer_, __LINE__)(::trajtransfer::lap::profile::Phase::name)
/// Adds `n` to the count of `event` (an expression of type trajtransfer::lap::profile::Event).
#define TT_LAP_PROFILE_COUNT(event, n) ::trajtransfer::lap::profile::add((event), (n))
#else
#define TT_LAP_PROFILE_PHASE(name) static_cast<void>(0)
#define TT_LAP_PROFILE_COUNT(event, n) static_cast<void>(0)
#endif

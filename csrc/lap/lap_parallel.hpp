// Two-thread split of the solver's streaming passes (internal header: lap_dense.cpp and
// lap_batch.cpp only).
//
// Why: a pass over a 1024 x 1024 or larger matrix is memory-bound on one core, and a second core
// adds bandwidth (measured: docs/dev/performance.md). Only the passes whose rows
// are independent are split (the warm start's row scan, the cold start's column minima and
// reduction transfer, the float32 check): ARR and the shortest paths stay sequential. The split
// never changes a result: per-row work is done in parallel, every decision that depends on row
// order is taken afterwards, in row order, on one thread.
//
// The helper is one persistent thread (starting a std::thread per pass costs ~50 us here, a
// sixth of a warm n = 1024 pass). Rows go out in chunks through an atomic counter, so the caller
// never waits for a helper that is late or busy elsewhere: it takes the remaining chunks itself,
// and only waits for the chunk the helper has already claimed. Concurrent solves (several Python
// threads) share the helper: each still finishes alone if the helper is busy with another.
#pragma once

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define TT_LAP_HAVE_ATFORK 1
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>

#include "lap/lap_profile.hpp"

namespace trajtransfer::lap::detail {

/// Set on threads that already run one solve each (solve_batch's workers), so that nested solves
/// stay single-threaded and a batch never oversubscribes the cores.
inline thread_local bool g_single_threaded_solves = false;

/// Marks the current thread as a batch worker for its lifetime (RAII).
class SingleThreadedSolves {
 public:
  SingleThreadedSolves() : prev_(g_single_threaded_solves) { g_single_threaded_solves = true; }
  ~SingleThreadedSolves() { g_single_threaded_solves = prev_; }
  SingleThreadedSolves(const SingleThreadedSolves&) = delete;
  SingleThreadedSolves& operator=(const SingleThreadedSolves&) = delete;

 private:
  bool prev_;
};

/// One split pass: rows [0, n) in chunks, each handed to fn(ctx, begin, end, thread) with thread
/// 0 (the caller) or 1 (the helper).
struct ChunkJob {
  std::int64_t n = 0, chunk = 1;
  void (*fn)(void*, std::int64_t, std::int64_t, int) = nullptr;
  void* ctx = nullptr;
  std::atomic<std::int64_t> next{0};

  void work(int thread) {
    for (std::int64_t b = next.fetch_add(chunk); b < n; b = next.fetch_add(chunk)) {
      fn(ctx, b, b + chunk < n ? b + chunk : n, thread);
      TT_LAP_PROFILE_COUNT(
          thread == 0 ? profile::Event::chunks_caller : profile::Event::chunks_helper, 1);
    }
  }
};

class HelperThread {
 public:
  /// The process's helper, started on first use; null without a second hardware thread or when
  /// the environment variable TRAJTRANSFER_LAP_THREADS=1 keeps every pass on the calling thread
  /// (read once; for busy machines, where a helper waiting for a core delays the pass).
  static HelperThread* get() {
    static const bool enabled = [] {
      const char* env = std::getenv("TRAJTRANSFER_LAP_THREADS");
      return std::thread::hardware_concurrency() >= 2 &&
             !(env != nullptr && std::strcmp(env, "1") == 0);
    }();
    if (!enabled) return nullptr;
    HelperThread* h = instance().load(std::memory_order_acquire);
    if (h != nullptr) return h;
    static std::mutex start_mu;
    std::lock_guard<std::mutex> lk(start_mu);
    h = instance().load(std::memory_order_relaxed);
    if (h == nullptr) {
      // Never destroyed: the helper waits on it until the process exits. A forked child has no
      // helper thread, so the fork handler makes it start its own on first use.
#ifdef TT_LAP_HAVE_ATFORK
      static const int registered = pthread_atfork(nullptr, nullptr, [] {
        instance().store(nullptr, std::memory_order_relaxed);
      });
      (void)registered;
#endif
      h = new HelperThread();
      std::thread(&HelperThread::loop, h).detach();
      instance().store(h, std::memory_order_release);
    }
    return h;
  }

  /// Wakes the helper ahead of a split pass (it then spins for kSpin), so that the futex
  /// wake-up overlaps the caller's set-up instead of the pass. run() wakes it the same way.
  void prewake() {
    generation_.fetch_add(1);
    if (sleeping_.load()) {
      // Notify under the lock: the helper tests generation_ and blocks atomically under it.
      std::lock_guard<std::mutex> lk(mu_);
      wake_.notify_one();
    }
  }

  /// Runs the job on the calling thread and the helper; returns when every chunk is done.
  void run(ChunkJob& job) {
    job_.store(&job);
    prewake();
    job.work(0);
    ChunkJob* mine = &job;
    job_.compare_exchange_strong(mine, nullptr);  // a late helper finds nothing to join
    // The helper holds at most one chunk (microseconds): spin, yielding now and then in case
    // it was preempted, rather than paying two context switches on a condition variable.
    for (unsigned spins = 0; active_.load() != 0; ++spins) {
      if ((spins & 255) == 255) std::this_thread::yield();
    }
  }

 private:
  static std::atomic<HelperThread*>& instance() {
    static std::atomic<HelperThread*> p{nullptr};
    return p;
  }

  // After each job the helper polls for kSpin before it sleeps: the passes of one solve come
  // in quick succession (row sample, rest of the rows; column minima, transfer; the float32
  // check after ARR), and so do the solves of a loop, while a futex wake-up costs ~10-50 us here
  // (this virtual machine), a sixth of a warm n = 1024 pass. It polls with yield() (a busy spin
  // competed with the caller for its core); 1 ms covers the sequential ARR of a warm n = 1024
  // re-solve. Measurements: docs/dev/performance.md.
  static constexpr std::chrono::microseconds kSpin{1000};

  void loop() {
    std::uint64_t seen = 0;
    while (true) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (generation_.load() == seen && std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
      if (generation_.load() == seen) {
        std::unique_lock<std::mutex> lk(mu_);
        sleeping_.store(true);
        wake_.wait(lk, [&] { return generation_.load() != seen; });
        sleeping_.store(false);
      }
      seen = generation_.load();
      ChunkJob* job = job_.load();
      if (job == nullptr) continue;
      active_.fetch_add(1);
      // Join only a job still published after announcing ourselves: its caller then waits
      // for active_ to drop before the job goes out of scope.
      if (job_.load() == job) job->work(1);
      active_.fetch_sub(1);
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<ChunkJob*> job_{nullptr};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> active_{0};
  std::atomic<bool> sleeping_{false};
};

/// HelperThread::prewake() when a split pass is coming (no-op in batch workers).
inline void prewake_helper() {
  if (g_single_threaded_solves) return;
  if (HelperThread* h = HelperThread::get()) h->prewake();
}

/// Calls body(begin, end, thread) over [0, n) in chunks of `chunk` rows, on the calling thread
/// and the helper when `split` (and a helper exists), else on the calling thread alone with one
/// call. thread is 0 or 1: per-thread scratch (flags, partial minima) is indexed by it.
template <class F>
void for_row_chunks(std::int64_t n, std::int64_t chunk, bool split, F&& body) {
  HelperThread* h = split && !g_single_threaded_solves ? HelperThread::get() : nullptr;
  if (h == nullptr || n <= chunk) {
    if (n > 0) body(std::int64_t{0}, n, 0);
    return;
  }
  ChunkJob job;
  job.n = n;
  job.chunk = chunk;
  using Body = std::remove_reference_t<F>;
  job.ctx = const_cast<void*>(static_cast<const void*>(&body));
  job.fn = [](void* ctx, std::int64_t b, std::int64_t e, int t) {
    (*static_cast<Body*>(ctx))(b, e, t);
  };
  h->run(job);
}

}  // namespace trajtransfer::lap::detail

// Host emulation of lap_kernel.cuh: see lap_emulation.hpp. Each emulated GPU thread is a
// std::thread; __syncthreads is a generation barrier; shared memory is a struct all threads see.
#include "cuda/lap_emulation.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cuda/lap_kernel.cuh"

namespace trajtransfer::cuda {
namespace {

/// What the threads of one emulated block share (the block's shared memory and barrier).
template <class T>
struct SharedBlockState {
  explicit SharedBlockState(int threads)
      : size(threads), partial(2 * static_cast<std::size_t>(threads)),
        flags(2 * static_cast<std::size_t>(threads)) {}

  std::vector<std::max_align_t> column_state;  // the kernel's dynamic shared memory

  void barrier() {
    std::unique_lock<std::mutex> lock(mutex);
    const std::uint64_t gen = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  }

  const int size;
  std::mutex mutex;  // barrier and atomics
  std::condition_variable cv;
  int arrived = 0;
  std::uint64_t generation = 0;
  std::vector<lapk::Candidate<T>> partial;  // [2][size]: one slot per thread, double-buffered
  std::vector<char> flags;                  // [2][size]
};

/// The Block interface of lap_kernel.cuh for one emulated thread; groups are single threads.
template <class T>
class HostBlock {
 public:
  HostBlock(SharedBlockState<T>& shared, int rank) : s_(shared), rank_(rank) {}

  std::int32_t thread_rank() const { return rank_; }
  std::int32_t num_threads() const { return s_.size; }
  std::int32_t group_rank() const { return rank_; }
  std::int32_t num_groups() const { return s_.size; }
  std::int32_t group_lane() const { return 0; }
  std::int32_t group_size() const { return 1; }
  void sync() { s_.barrier(); }
  lapk::Candidate<T> group_argmin(lapk::Candidate<T> c) const { return c; }
  void atomic_min(std::int32_t* address, std::int32_t value) {
    std::lock_guard<std::mutex> lock(s_.mutex);
    *address = std::min(*address, value);
  }

  // Same double-buffering as CudaBlock::argmin: one barrier per call.
  bool any(bool p) {
    const std::size_t base = static_cast<std::size_t>(any_buffer_) * s_.size;
    s_.flags[base + rank_] = p ? 1 : 0;
    s_.barrier();
    bool result = false;
    for (int t = 0; t < s_.size; ++t) result = result || s_.flags[base + t] != 0;
    any_buffer_ ^= 1;
    return result;
  }

  lapk::Candidate<T> argmin(lapk::Candidate<T> c) {
    const std::size_t base = static_cast<std::size_t>(argmin_buffer_) * s_.size;
    s_.partial[base + rank_] = c;
    s_.barrier();
    lapk::Candidate<T> best = lapk::no_candidate<T>();
    for (int t = 0; t < s_.size; ++t) {
      if (lapk::precedes(s_.partial[base + t], best)) best = s_.partial[base + t];
    }
    argmin_buffer_ ^= 1;
    return best;
  }

 private:
  SharedBlockState<T>& s_;
  int rank_;
  int any_buffer_ = 0;
  int argmin_buffer_ = 0;
};

template <class T, bool Maximize>
void run_block(const lapk::KernelParams<T>& kp, std::int64_t b, int threads) {
  SharedBlockState<T> shared(threads);
  if (kp.shared_state) {
    shared.column_state.resize(lapk::shared_state_bytes<T>(kp.m) / sizeof(std::max_align_t) + 1);
  }
  auto* smem = reinterpret_cast<unsigned char*>(shared.column_state.data());
  auto body = [&](int rank) {
    HostBlock<T> blk(shared, rank);
    lapk::run_problem<T, Maximize>(blk, kp, b, smem);
  };
  if (threads == 1) {
    body(0);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) pool.emplace_back(body, t);
  for (auto& th : pool) th.join();
}

}  // namespace

template <class T>
void emulate_lap_batch(const LapBatchParams<T>& prm) {
  if (prm.batch < 0 || prm.rows < 0 || prm.cols < 0) {
    throw std::invalid_argument("emulate_lap_batch: negative size");
  }
  if (prm.batch == 0 || prm.rows == 0 || prm.cols == 0) return;
  if (std::max(prm.rows, prm.cols) >= (std::int64_t{1} << 30)) {
    throw std::invalid_argument("emulate_lap_batch: rows and cols must be below 2**30");
  }
  if (prm.cost == nullptr || prm.assignment == nullptr || prm.status == nullptr) {
    throw std::invalid_argument("emulate_lap_batch: cost, assignment and status are required");
  }
  if (prm.col_duals_in != nullptr && prm.rows != prm.cols) {
    throw std::invalid_argument("emulate_lap_batch: warm-start column duals need square problems");
  }
  if (prm.row_reduction_passes < 0) {
    throw std::invalid_argument("emulate_lap_batch: row_reduction_passes must be >= 0");
  }
  const int threads = prm.block_threads == 0 ? 1 : prm.block_threads;
  if (threads < 1 || threads > 1024) {
    throw std::invalid_argument("emulate_lap_batch: block_threads must be in [1, 1024]");
  }
  const bool transposed = prm.rows > prm.cols;
  const std::int64_t n = std::min(prm.rows, prm.cols), m = std::max(prm.rows, prm.cols);
  const lapk::WorkspaceLayout layout = lapk::workspace_layout<T>(prm.batch, n, m, false);
  std::vector<std::max_align_t> ws((layout.bytes + sizeof(std::max_align_t) - 1) /
                                   sizeof(std::max_align_t));
  // Transposition by strides: the solved problem's C[i, j] is the user's C[j, i].
  lapk::KernelParams<T> kp =
      transposed ? lapk::make_kernel_params(prm, prm.cost, 1, prm.cols, ws.data(), layout)
                 : lapk::make_kernel_params(prm, prm.cost, prm.cols, 1, ws.data(), layout);
  kp.shared_state = prm.shared_state != 0;  // no size limit on the host
  for (std::int64_t b = 0; b < prm.batch; ++b) {
    if (prm.maximize) {
      run_block<T, true>(kp, b, threads);
    } else {
      run_block<T, false>(kp, b, threads);
    }
  }
}

template void emulate_lap_batch<float>(const LapBatchParams<float>&);
template void emulate_lap_batch<double>(const LapBatchParams<double>&);

}  // namespace trajtransfer::cuda

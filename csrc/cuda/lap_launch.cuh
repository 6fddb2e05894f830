// Definition of lap_batch<T>(); included once per dtype by lap_batch_f32.cu / lap_batch_f64.cu.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.hpp"
#include "cuda/lap_cuda.hpp"
#include "cuda/lap_kernel.cuh"
#include "cuda/static_switch.hpp"

namespace trajtransfer::cuda {

namespace detail {

/// Threads per problem: about four columns per thread, whole warps, at most 1024.
inline int pick_block_threads(int requested, std::int64_t m) {
  if (requested != 0) return requested;
  const std::int64_t per_four = (m + 3) / 4;
  return static_cast<int>(std::clamp<std::int64_t>((per_four + 31) / 32 * 32, 32, 1024));
}

/// Frees a stream-ordered allocation on every exit path (after later launches on the stream).
struct StreamBuffer {
  void* ptr = nullptr;
  cudaStream_t stream = nullptr;
  StreamBuffer(std::size_t bytes, cudaStream_t s) : stream(s) {
    TT_CUDA_TRY(cudaMallocAsync(&ptr, bytes, s));
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  ~StreamBuffer() {
    if (ptr != nullptr) (void)cudaFreeAsync(ptr, stream);  // nothing sensible to do on failure
  }
};

}  // namespace detail

template <class T>
void lap_batch(const LapBatchParams<T>& prm, cudaStream_t stream) {
  TT_EXPECTS(prm.batch >= 0 && prm.rows >= 0 && prm.cols >= 0, "lap_batch: negative size");
  if (prm.batch == 0 || prm.rows == 0 || prm.cols == 0) return;
  TT_EXPECTS(std::max(prm.rows, prm.cols) < (std::int64_t{1} << 30),
             "lap_batch: rows and cols must be below 2**30");
  TT_EXPECTS(prm.cost != nullptr && prm.assignment != nullptr && prm.status != nullptr,
             "lap_batch: cost, assignment and status must be device pointers");
  TT_EXPECTS(prm.row_reduction_passes >= 0, "lap_batch: row_reduction_passes must be >= 0");
  TT_EXPECTS(prm.col_duals_in == nullptr || prm.rows == prm.cols,
             "lap_batch: warm-start column duals need square problems");
  const int threads = detail::pick_block_threads(prm.block_threads, std::max(prm.rows, prm.cols));
  TT_EXPECTS(threads >= 32 && threads <= 1024 && threads % 32 == 0,
             "lap_batch: block_threads must be a multiple of 32 in [32, 1024]");

  const bool transposed = prm.rows > prm.cols;
  const std::int64_t n = std::min(prm.rows, prm.cols), m = std::max(prm.rows, prm.cols);
  const lapk::WorkspaceLayout layout = lapk::workspace_layout<T>(prm.batch, n, m, transposed);
  detail::StreamBuffer ws(layout.bytes, stream);
  auto* base = static_cast<unsigned char*>(ws.ptr);

  const T* cost = prm.cost;
  if (transposed) {
    // The scans read rows of the solved problem: give them contiguous (coalesced) rows.
    T* t = reinterpret_cast<T*>(base + layout.transposed_offset);
    const dim3 grid(static_cast<unsigned>((prm.cols + 31) / 32),
                    static_cast<unsigned>((prm.rows + 31) / 32),
                    static_cast<unsigned>(std::min<std::int64_t>(prm.batch, 65535)));
    TT_EXPECTS(grid.y <= 65535u, "lap_batch: too many rows for the transpose grid");
    lapk::transpose_batch_kernel<T><<<grid, dim3(32, 8), 0, stream>>>(prm.cost, t, prm.batch,
                                                                      prm.rows, prm.cols);
    TT_CHECK_LAUNCH();
    cost = t;
  }
  lapk::KernelParams<T> kp = lapk::make_kernel_params(prm, cost, m, 1, ws.ptr, layout);

  // Per-column state in shared memory when it fits the opt-in limit (next to the static 2x32
  // reduction slots): every Dijkstra step reads it, so its latency is the step's latency.
  int device = 0, smem_optin = 0;
  TT_CUDA_TRY(cudaGetDevice(&device));
  TT_CUDA_TRY(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const std::size_t smem = lapk::shared_state_bytes<T>(m);
  const bool fits = smem + 2 * 32 * sizeof(lapk::Candidate<T>) + 1024 <=
                    static_cast<std::size_t>(smem_optin);
  TT_EXPECTS(prm.shared_state != 1 || fits, "lap_batch: shared_state=1 but the columns do not fit");
  kp.shared_state = prm.shared_state == 1 || (prm.shared_state == -1 && fits);
  const std::size_t dynamic_smem = kp.shared_state ? smem : 0;

  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(prm.batch, 1 << 30));
  TT_BOOL_SWITCH(prm.maximize, kMaximize, [&] {
    auto* kernel = &lapk::lap_batch_kernel<T, kMaximize>;
    TT_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(dynamic_smem)));
    kernel<<<grid, static_cast<unsigned>(threads), dynamic_smem, stream>>>(kp);
  });
  TT_CHECK_LAUNCH();
}

}  // namespace trajtransfer::cuda

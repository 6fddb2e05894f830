// The plain-data parameters of the batched LAP on the GPU (and of its host emulation).
//
// No CUDA headers here: the host emulation (lap_emulation.cpp) is compiled into every build.
#pragma once

#include <cstdint>

namespace trajtransfer::cuda {

/// Per-problem outcome written to LapBatchParams::status; the same values as lap::Status.
enum LapStatus : std::int32_t {
  lap_ok = 0,
  lap_invalid_entries = 1,  ///< NaN or -inf in sign*cost (sign = -1 if maximizing), or warm duals
  lap_infeasible = 2,       ///< +inf (forbidden) entries leave no complete assignment
};

/// B independent dense (rows, cols) assignment problems, C-contiguous, on one device.
///
/// The solved problem is min sum_i s*C[i, col(i)] with s = -1 when `maximize`; s*C = +inf marks a
/// forbidden pair. Problems with rows > cols are solved transposed (rows and columns swap roles).
template <class T>
struct LapBatchParams {
  /// (batch, rows, cols) C-contiguous; device memory (host memory for the emulation)
  const T* cost = nullptr;
  std::int64_t batch = 0;  ///< number of problems B
  std::int64_t rows = 0;   ///< n
  std::int64_t cols = 0;   ///< m
  bool maximize = false;   ///< maximise instead of minimise
  /// (batch, cols) warm-start column duals (of the minimisation solved); square problems only;
  /// or null. Any finite values give the same optimum; good ones shorten the search.
  const T* col_duals_in = nullptr;
  /// (batch, min(rows, cols)) out: for rows <= cols the column of row i, else the row of column j
  std::int64_t* assignment = nullptr;
  std::int32_t* status = nullptr;  ///< (batch,) out: LapStatus per problem
  /// (batch, rows) out, or null: u with u_i + v_j <= s*C_ij, equality on assigned pairs
  T* row_duals = nullptr;
  /// (batch, cols) out, or null: v (0 on unassigned columns)
  T* col_duals = nullptr;
  /// passes of Jonker-Volgenant's augmenting row reduction before the shortest augmenting paths;
  /// 0 = none (row reduction, then one augmentation per row left free). Off by default: counted
  /// in block reductions (the GPU's unit of cost) it saved <= 15 % on uniform costs and cost
  /// extra on correlation-like ones (host emulation, n = 1000/2000); the GPU bench compares.
  int row_reduction_passes = 0;
  /// threads per problem (a multiple of 32 in [32, 1024] on the device); 0 = about cols / 4
  int block_threads = 0;
  /// where the per-column state of a problem lives: -1 = shared memory when it fits (auto),
  /// 0 = global memory, 1 = shared memory (an error when it does not fit)
  int shared_state = -1;
};

}  // namespace trajtransfer::cuda

// Exact dense linear assignment (Jonker-Volgenant family).
//
// Python-free: raw pointers, sizes and strides in, a Status out. The bindings turn each Status
// into one exception with one message.
#pragma once

#include <cstdint>

namespace trajtransfer::lap {

/// Outcome of a solve. Every non-ok value maps to one Python ValueError message.
enum class Status : int {
  ok = 0,
  invalid_entries = 1,  ///< the cost matrix contains NaN or -inf (+inf when maximizing)
  infeasible = 2,       ///< +inf (forbidden) entries leave no complete assignment
  interrupted = 3,      ///< the calling thread's interrupt poll asked to stop (no result)
};

/// Cooperative interruption of long solves. A poll installed for the calling thread is asked,
/// at most every `kInterruptPollMs` milliseconds, between augmenting paths here and between
/// group visits in the matcher; when it returns true the solve stops with Status::interrupted
/// and writes nothing. Null (the default): never interrupted.
using InterruptPoll = bool (*)();
inline constexpr int kInterruptPollMs = 50;
/// Install `poll` for this thread; returns the previous one (to restore it).
InterruptPoll set_interrupt_poll(InterruptPoll poll);
/// True when this thread's poll, asked if its interval has passed, requests a stop.
bool interrupt_requested();

/// Optional warm start for a solve. Only used for square problems; rectangular problems ignore it
/// (a column dual that is not zero on an unassigned column would break optimality there).
/// Any finite prices are valid (they change the speed, never the optimum); prices that are not
/// finite or within 1/256 of T's largest value are ignored, and a warm result whose duals are
/// far larger than the costs they price is re-solved cold (see duals_certify()). Rows keep their
/// previous column when it is still their cheapest reduced column.
template <class T>
struct WarmStart {
  const T* col_duals = nullptr;              ///< (m,) column duals v from a previous solve
  const std::int64_t* col_of_row = nullptr;  ///< (n,) previous assignment, or null
};

/// Outputs of a solve. Dual pointers may be null when the caller does not want them.
///
/// The duals belong to the minimisation problem actually solved: costs s*C with s = -1 when
/// maximising, so that u_i + v_j <= s*C_ij with equality on assigned pairs (up to rounding).
/// For n > m the roles are swapped internally; duals are returned for the original orientation.
template <class T>
struct Solution {
  std::int64_t* col_of_row = nullptr;  ///< (n,) when n <= m; (m,) row indices when n > m
  T* row_duals = nullptr;              ///< (n,) or null
  T* col_duals = nullptr;              ///< (m,) or null
};

/// Solve min (or max) sum_i C[i, col(i)] for a dense (n, m) matrix.
///
/// Exact: float64 is solved in float64. float32 is solved in float32 and then checked in float64.
/// With `exact` the check is exact: every row must be tight in float64 (its column attains the
/// float64 minimum of its reduced costs at the float32 prices); rows that are not are re-augmented
/// by float64 shortest paths over the float32 entries (re-solved in float64 where that cannot
/// certify the result), so the assignment is optimal for the float64 values of the entries, as
/// SciPy's float64 solve of the same matrix. Without `exact` the check tolerates a duality gap of
/// 2 FLT_EPSILON sum_i (|c_i,x(i)| + |v_x(i)|) (about one float32 rounding per row) and re-solves
/// in float64 from the float32 duals beyond it: faster, and what the matcher uses on the float32
/// costs it builds itself. float64 problems ignore `exact`.
/// Problems with n <= m are read in place, maximising included (no copy); n > m solves a
/// transposed copy. Problems of at least 2^19 entries split their streaming passes (those whose
/// rows are independent) over the calling thread and one helper thread, with the same result as
/// on one thread; solve_batch's workers, and TRAJTRANSFER_LAP_THREADS=1, keep them on one.
/// Cold solves (no warm start) with at least 1/64 constant rows or (square)
/// columns, such as the zero rows/columns of dead units in gradient costs, are solved without
/// them (rows in place, columns from a transposed copy; exact: a constant line costs the same
/// whatever it is matched with).
///
/// @param cost        pointer to C[0, 0]; row i starts at cost + i * row_stride
/// @param n, m        shape; either may be zero
/// @param row_stride  elements between consecutive rows (>= m)
/// @param maximize    maximise instead of minimise
/// @param out         assignment (and optional duals). With n <= m, out.col_of_row[i] is the
///                    column of row i. With n > m, out.col_of_row[j] is the row of column j
///                    (that is, rows are implicit in the shorter dimension).
/// @param warm        optional warm start (square problems only)
/// @param exact       float32 only: certify (or repair) in float64 exactly (see above)
/// @return Status::ok, or the reason no assignment is returned.
template <class T>
Status solve(const T* cost, std::int64_t n, std::int64_t m, std::int64_t row_stride,
             bool maximize, const Solution<T>& out, const WarmStart<T>& warm = {},
             bool exact = false);

/// Work counters of the calling thread's most recent solve() (each solve() resets them; batch
/// workers count their own). One increment per O(m) scan: cheap enough to keep in every build.
/// Tests bound the work on adversarial inputs with them instead of timing.
struct SolveStats {
  std::int64_t paths = 0;       ///< shortest augmenting paths searched
  std::int64_t path_scans = 0;  ///< row scans (O(m) each) of those searches
  std::int64_t arr_scans = 0;   ///< full row scans of augmenting row reduction (cache misses)
  std::int64_t cold_restarts = 0;  ///< warm starts given up for a cold solve (0 or 1)
  std::int64_t warm_rows_read = 0;  ///< rows the warm start's pass read before it went on or gave up
};
SolveStats last_solve_stats();

/// Name of the SIMD kernel set the solver uses on this CPU: "avx512", "avx2" or "base" (SSE2 or
/// the compiler's generic vectors). Chosen once at run time; the environment variable
/// TRAJTRANSFER_LAP_ISA=avx2|base caps it (used by the tests to cover every kernel set).
const char* simd_level();

/// Solve B independent (n, m) problems laid out contiguously, on a pool of threads.
///
/// @param costs        (B, n, m) contiguous
/// @param col_of_row   (B, min(n, m)) output, same convention as solve()
/// @param status       (B,) per-problem status
/// @param num_threads  0 = hardware concurrency
/// @param exact        as solve()
template <class T>
void solve_batch(const T* costs, std::int64_t batch, std::int64_t n, std::int64_t m, bool maximize,
                 std::int64_t* col_of_row, Status* status, int num_threads, bool exact = false);

}  // namespace trajtransfer::lap

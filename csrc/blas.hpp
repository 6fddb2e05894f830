// The BLAS symbols we call, declared once. They come from the scipy-openblas32 wheel, whose
// exported names carry a `scipy_` prefix (and 32-bit integers), so no system cblas.h applies.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <thread>

#include "parallel.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

extern "C" {
/// Fortran SGEMM: C = alpha * op(A) * op(B) + beta * C, all column-major.
void scipy_sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                  const int* k, const float* alpha, const float* a, const int* lda, const float* b,
                  const int* ldb, const float* beta, float* c, const int* ldc);
/// Fortran DGEMM, the same in float64 (the exact objective of factored pairs).
void scipy_dgemm_(const char* transa, const char* transb, const int* m, const int* n,
                  const int* k, const double* alpha, const double* a, const int* lda,
                  const double* b, const int* ldb, const double* beta, double* c, const int* ldc);
void scipy_openblas_set_num_threads(int num_threads);
int scipy_openblas_get_num_threads(void);
}

namespace trajtransfer::blas {

/// Thread policy. OpenBLAS itself always runs on one thread: its level-3 threading synchronises
/// the threads at every block with busy waits, and on a busy 2-core machine that was measured
/// 4x slower than one thread (docs/dev/performance.md). Large GEMMs are instead split
/// statically over parallel::threads() std::threads that each call single-threaded OpenBLAS, so
/// a thread that gets descheduled delays only its own part. Small ones stay on the caller's
/// thread.
constexpr double kParallelFlops = 2.0e8;

inline void single_threaded_openblas() {
  static const bool once = [] {
    scipy_openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

namespace detail {

inline std::atomic<int> g_gemms_in_flight{0};
inline std::atomic<bool> g_exiting{false};

inline void drain_gemms_at_exit() {
  g_exiting.store(true);
  while (g_gemms_in_flight.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

inline int register_exit_handlers() {
#if defined(__unix__) || defined(__APPLE__)
  // A forked child has none of the threads whose GEMMs the copied count holds.
  pthread_atfork(nullptr, nullptr, [] { g_gemms_in_flight.store(0); });
#endif
  return std::atexit(drain_gemms_at_exit);
}

}  // namespace detail

/// Marks a GEMM in flight for the exit handshake below; parks the thread if exit began.
class InFlight {
 public:
  InFlight() {
    static const int registered = detail::register_exit_handlers();
    (void)registered;
    detail::g_gemms_in_flight.fetch_add(1);
    if (detail::g_exiting.load()) {
      detail::g_gemms_in_flight.fetch_sub(1);
      parallel::park_until_exit();
    }
  }
  ~InFlight() { detail::g_gemms_in_flight.fetch_sub(1); }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
};

/// Fortran SGEMM, safe at process exit. exit() runs OpenBLAS's library destructor, which frees
/// its GEMM buffers, after the atexit handlers; a thread still inside sgemm then (a daemon Python
/// thread, which nothing stops) faults. So an atexit handler waits for the GEMMs in flight, and a
/// GEMM that would start later parks its thread instead (a seq_cst counter-then-flag handshake:
/// either the handler sees the GEMM counted, or the GEMM sees the flag).
inline void sgemm(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                  const float* alpha, const float* a, const int* lda, const float* b,
                  const int* ldb, const float* beta, float* c, const int* ldc) {
  const InFlight guard;
  scipy_sgemm_(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/// Row-major C (m x n, ld ldc) = alpha * op(A) op(B) + beta * C on the calling thread (op: the
/// transpose where `ta` / `tb`). Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
/// so the operands swap. Empty products leave C to beta (BLAS rejects zero leading dimensions).
inline void sgemm_rm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                     const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  single_threaded_openblas();
  const char ca = ta ? 'T' : 'N', cb = tb ? 'T' : 'N';
  const int la = std::max(lda, 1), lb = std::max(ldb, 1);
  sgemm(&cb, &ca, &n, &m, &k, &alpha, b, &lb, a, &la, &beta, c, &ldc);
}

/// sgemm_rm in float64.
inline void dgemm_rm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a,
                     int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  single_threaded_openblas();
  const char ca = ta ? 'T' : 'N', cb = tb ? 'T' : 'N';
  const int la = std::max(lda, 1), lb = std::max(ldb, 1);
  const InFlight guard;
  scipy_dgemm_(&cb, &ca, &n, &m, &k, &alpha, b, &lb, a, &la, &beta, c, &ldc);
}

/// Run f(i0, i1) over [0, n) split into contiguous parts of at least 16, one per thread (caller
/// included), when the job has at least kParallelFlops floating-point operations.
template <class F>
void split_rows(int n, double flops, F&& f) {
  single_threaded_openblas();
  int parts = flops >= kParallelFlops ? parallel::threads() : 1;
  parts = std::max(1, std::min(parts, n / 16));
  parallel::run_parts(n, parts, [&f](std::int64_t i0, std::int64_t i1) {
    f(static_cast<int>(i0), static_cast<int>(i1));
  });
}

/// One thread's share of sgemm_rows_nt: columns [j0, j1) of C from S's rows j0..j1 only
/// (`s_part` points at row j0), so a caller can gather exactly those rows on the same thread.
inline void sgemm_rows_nt_cols(int n, int w, int j0, int j1, float alpha, const float* t,
                               const float* s_part, float beta, float* c) {
  const char na = 'N', tr = 'T';
  const int cols = j1 - j0;
  // Column-major: the (cols x n) block at c + j0 (ld n) is C^T's rows j0..j1 = S_part * T^T.
  sgemm(&tr, &na, &cols, &n, &w, &alpha, s_part, &w, t, &w, &beta, c + j0, &n);
}

/// One thread's share of sgemm_tn_rows: columns [j0, j1) of C from S's columns j0..j1 only,
/// `rows` rows of them `ld_s` floats apart (`s_part` points at S[0][j0], or at a thread's own
/// gathered copy with ld_s = j1 - j0).
inline void sgemm_tn_rows_cols(int n, int rows, int j0, int j1, float alpha, const float* t,
                               const float* s_part, int ld_s, float beta, float* c) {
  const char na = 'N', tr = 'T';
  const int cols = j1 - j0;
  sgemm(&na, &tr, &cols, &n, &rows, &alpha, s_part, &ld_s, t, &n, &beta, c + j0, &n);
}

/// C (n x n, row-major) = alpha * T^T S + beta * C for T, S stored as L rows of n floats
/// (row-major L x n): C[i][j] = alpha * sum_l T[l][i] * S[l][j] + beta * C[i][j].
inline void sgemm_tn_rows(int n, int rows, float alpha, const float* t, const float* s, float beta,
                          float* c) {
  split_rows(n, 2.0 * n * n * static_cast<double>(rows), [&](int j0, int j1) {
    sgemm_tn_rows_cols(n, rows, j0, j1, alpha, t, s + j0, n, beta, c);
  });
}

/// C (n x n, row-major) = alpha * T S^T + beta * C for T, S stored as n rows of w floats
/// (row-major n x w): C[i][j] = alpha * sum_l T[i][l] * S[j][l] + beta * C[i][j].
inline void sgemm_rows_nt(int n, int w, float alpha, const float* t, const float* s, float beta,
                          float* c) {
  split_rows(n, 2.0 * n * n * static_cast<double>(w), [&](int j0, int j1) {
    sgemm_rows_nt_cols(n, w, j0, j1, alpha, t, s + static_cast<std::ptrdiff_t>(j0) * w, beta, c);
  });
}

}  // namespace trajtransfer::blas

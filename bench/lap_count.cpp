// Instruction counts of one LAP solve (deterministic, unlike times on a shared machine): a
// uniform (n, n) cost matrix is solved cold, then perturbed (1 % Gaussian multiplicative noise,
// or a rank-1 shift) and solved again, warm from the first solve's duals or cold; only that
// second solve, inside timed_solve(), is counted. Prints its objective and work counters.
//
//   g++ -std=c++17 -O2 -march=x86-64-v3 -pthread -Icsrc bench/lap_count.cpp csrc/lap/lap_dense.cpp \
//       -o /tmp/lap_count
//   TRAJTRANSFER_LAP_ISA=avx2 TRAJTRANSFER_LAP_THREADS=1 valgrind --tool=callgrind \
//       --toggle-collect='*timed_solve*' /tmp/lap_count 1024 f warm exact [rank1]
//
// Arguments: n; f (float32) or d (float64); warm or cold; exact or inexact (float32's float64
// check); rank1 for the rank-1 shift instead of the noise. valgrind runs the avx2 and base
// kernels (not avx512).
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
#include "lap/lap.hpp"
using namespace trajtransfer::lap;
static bool g_exact = true;
static bool g_rank1 = false;
template <class T>
__attribute__((noinline)) Status timed_solve(const T* c, int n, const Solution<T>& out, const WarmStart<T>& w) {
  return solve<T>(c, n, n, n, false, out, w, g_exact);
}
template <class T> void run(int n, bool warm) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  std::normal_distribution<double> nrm(0.0, 1.0);
  std::vector<T> c(size_t(n) * n), c2(size_t(n) * n);
  for (auto& x : c) x = T(uni(gen));
  if (g_rank1) {
    std::vector<double> a(n), b(n);
    for (auto& x : a) x = 0.1 * uni(gen);
    for (auto& x : b) x = 0.1 * uni(gen);
    for (int i = 0; i < n; ++i) for (int j = 0; j < n; ++j) c2[size_t(i) * n + j] = T(double(c[size_t(i) * n + j]) + a[i] + b[j]);
  } else {
    for (size_t i = 0; i < c.size(); ++i) c2[i] = T(c[i] * (1 + 0.01 * nrm(gen)));
  }
  std::vector<std::int64_t> col(n), col2(n);
  std::vector<T> u(n), v(n);
  Solution<T> out{col.data(), u.data(), v.data()};
  solve<T>(c.data(), n, n, n, false, out, {}, true);
  Solution<T> out2{col2.data(), nullptr, nullptr};
  WarmStart<T> ws{v.data(), col.data()};
  timed_solve<T>(c2.data(), n, out2, warm ? ws : WarmStart<T>{});
  double s = 0; for (int i = 0; i < n; ++i) s += c2[size_t(i) * n + col2[i]];
  auto st = last_solve_stats(); std::printf("obj %.12g paths %ld path_scans %ld arr_scans %ld restarts %ld\n", s, (long)st.paths, (long)st.path_scans, (long)st.arr_scans, (long)st.cold_restarts);
}
int main(int argc, char** argv) {
  if (argc > 5) g_rank1 = true;
  if (argc > 4) g_exact = argv[4][0] == 'e';
  int n = std::atoi(argv[1]); bool f32 = argv[2][0] == 'f'; bool warm = argv[3][0] == 'w';
  if (f32) run<float>(n, warm); else run<double>(n, warm);
}

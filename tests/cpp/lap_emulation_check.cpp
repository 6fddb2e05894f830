// Brute-force check of the GPU LAP's host emulation, meant to be built with ThreadSanitizer:
// a missing barrier in lap_kernel.cuh shows up as a data race between the emulated threads.
//
//   g++ -std=c++17 -O1 -g -fsanitize=thread -Icsrc tests/cpp/lap_emulation_check.cpp \
//       csrc/cuda/lap_emulation.cpp -o /tmp/lap_emu_check && /tmp/lap_emu_check
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "cuda/lap_emulation.hpp"

namespace {

using trajtransfer::cuda::LapBatchParams;

// Optimal cost over all injective maps of the shorter axis into the longer one; inf if none.
double brute_force(const std::vector<double>& c, int n, int m, bool maximize) {
  const int k = std::min(n, m), big = std::max(n, m);
  std::vector<int> perm(big);
  for (int i = 0; i < big; ++i) perm[i] = i;
  double best = std::numeric_limits<double>::infinity();
  do {
    double total = 0;
    for (int s = 0; s < k; ++s) {
      const double x = n <= m ? c[s * m + perm[s]] : c[perm[s] * m + s];
      total += maximize ? -x : x;
    }
    best = std::min(best, total);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return best;
}

}  // namespace

int main() {
  std::mt19937_64 gen(7);
  const double inf = std::numeric_limits<double>::infinity();
  int failures = 0, cases = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(gen() % 6), m = 1 + static_cast<int>(gen() % 6);
    const bool maximize = gen() % 2 == 0;
    const int threads = 1 + static_cast<int>(gen() % 5);
    const int batch = 1 + static_cast<int>(gen() % 3);
    std::vector<double> cost(static_cast<std::size_t>(batch * n * m));
    for (auto& x : cost) {
      const auto r = gen() % 10;
      x = r == 0 ? (maximize ? -inf : inf) : static_cast<double>(gen() % 4);  // ties and forbidden
    }
    std::vector<std::int64_t> out(static_cast<std::size_t>(batch * std::min(n, m)));
    std::vector<std::int32_t> status(static_cast<std::size_t>(batch));
    LapBatchParams<double> p;
    p.cost = cost.data();
    p.batch = batch;
    p.rows = n;
    p.cols = m;
    p.maximize = maximize;
    p.assignment = out.data();
    p.status = status.data();
    p.block_threads = threads;
    p.shared_state = trial % 2;  // both placements of the per-column state
    p.row_reduction_passes = static_cast<int>(trial % 3);  // with and without JV's ARR
    trajtransfer::cuda::emulate_lap_batch(p);
    for (int b = 0; b < batch; ++b) {
      ++cases;
      std::vector<double> c(cost.begin() + b * n * m, cost.begin() + (b + 1) * n * m);
      const double expect = brute_force(c, n, m, maximize);
      const int k = std::min(n, m);
      if (std::isinf(expect)) {
        if (status[b] != 2) {
          std::printf("FAIL trial %d/%d: expected infeasible, status %d\n", trial, b, status[b]);
          ++failures;
        }
        continue;
      }
      if (status[b] != 0) {
        std::printf("FAIL trial %d/%d: status %d, optimum %g\n", trial, b, status[b], expect);
        ++failures;
        continue;
      }
      double total = 0;
      std::vector<int> seen(static_cast<std::size_t>(std::max(n, m)), 0);
      for (int s = 0; s < k; ++s) {
        const auto t = out[b * k + s];
        ++seen[t];
        const double x = n <= m ? c[s * m + t] : c[t * m + s];
        total += maximize ? -x : x;
      }
      const bool injective = std::all_of(seen.begin(), seen.end(), [](int v) { return v <= 1; });
      if (!injective || total != expect) {
        std::printf("FAIL trial %d/%d (n=%d m=%d max=%d threads=%d): %g vs %g\n", trial, b, n, m,
                    maximize, threads, total, expect);
        ++failures;
      }
    }
  }
  std::printf("%d cases, %d failures\n", cases, failures);
  return failures == 0 ? 0 : 1;
}

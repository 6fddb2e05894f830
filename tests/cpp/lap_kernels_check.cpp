// Brute-force check of the LAP row kernels that leave row-cache certificates (built and run by
// tests/test_lap_kernels.py): for random rows (ties, +-inf, NaN, every length from 1 to a few
// vectors past 8 W^2), each instruction set this CPU runs, both signs and both float types,
// the kernel's minimum, second minimum, flags and certificate against a scalar oracle.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "lap/lap_kernels.hpp"

using namespace trajtransfer::lap::detail;

namespace {

long g_cases = 0, g_failures = 0;

void fail(const char* what, const char* isa, int m, int sign, int size) {
  if (++g_failures <= 20) std::printf("FAIL %s: isa %s m %d sign %d float%d\n", what, isa, m, sign, size * 8);
}

template <class T, int S>
using Fn = Min2<T> (*)(const T*, const T*, idx, EntryFlags*, pidx<T>*, T*, T*);
template <class T, int S>
using FnNoCheck = Min2<T> (*)(const T*, const T*, idx, pidx<T>*, T*, T*);

// depth: certificate columns per lane (1, or 2 for the two-set and depth-2 kernels);
// first_col: the kernel names the smallest column among the minima. A kernel without
// validation (`plain`) is only given rows without NaN or -inf, as the solver does.
template <class T, int S>
void check_one(Fn<T, S> fn, FnNoCheck<T, S> plain, const char* isa, int lanes, int depth,
               bool first_col, const std::vector<T>& r, const std::vector<T>& v) {
  const int m = static_cast<int>(r.size());
  ++g_cases;
  std::vector<double> h(m);
  bool invalid = false, forbidden = false;
  for (int j = 0; j < m; ++j) {
    const T x = S > 0 ? r[j] : -r[j];
    invalid |= !(x > -std::numeric_limits<T>::infinity());
    forbidden |= x == std::numeric_limits<T>::infinity();
    h[j] = static_cast<double>(static_cast<T>(x - v[j]));
  }
  std::vector<pidx<T>> cols(2 * lanes, -7);
  std::vector<T> vals(2 * lanes);
  T bound = 0;
  if (plain != nullptr && invalid) return;
  EntryFlags f;
  const Min2<T> got = plain != nullptr
                          ? plain(r.data(), v.data(), m, cols.data(), vals.data(), &bound)
                          : fn(r.data(), v.data(), m, &f, cols.data(), vals.data(), &bound);
  if (plain == nullptr && (f.invalid != invalid || f.forbidden != forbidden)) {
    fail("flags", isa, m, S, sizeof(T));
  }
  if (invalid) return;  // the solver rejects such a row: no answer to check
  double m1 = INFINITY, m2 = INFINITY;
  int i1 = -1;
  for (int j = 0; j < m; ++j) {
    if (h[j] < m1) {
      m2 = m1;
      m1 = h[j];
      i1 = j;
    } else if (h[j] < m2) {
      m2 = h[j];
    }
  }
  if (static_cast<double>(got.m1) != m1 || static_cast<double>(got.m2) != m2) {
    fail("min2 values", isa, m, S, sizeof(T));
  }
  if (m1 < INFINITY) {
    if (got.i1 < 0 || got.i1 >= m || h[got.i1] != m1) fail("argmin", isa, m, S, sizeof(T));
    if (first_col && got.i1 != i1) fail("smallest column on ties", isa, m, S, sizeof(T));
  }
  const int count = m >= (first_col ? 2 : 1) * lanes ? depth * lanes : 0;
  if (count == 0) return;  // no vector pass: no certificate
  std::set<long> cached;
  for (int l = 0; l < count; ++l) {
    const long c = cols[l];
    if (c < 0 || c >= m) {
      fail("cached column out of range", isa, m, S, sizeof(T));
      return;
    }
    const T x = S > 0 ? r[c] : -r[c];
    // A duplicate must sit at +inf (inert); a real entry must carry its signed cost.
    if (cached.count(c)) {
      if (!(vals[l] == std::numeric_limits<T>::infinity())) fail("duplicate", isa, m, S, sizeof(T));
    } else if (!(vals[l] == x)) {
      fail("cached cost", isa, m, S, sizeof(T));
    }
    cached.insert(c);
  }
  for (int j = 0; j < m; ++j) {
    if (!cached.count(j) && h[j] < static_cast<double>(bound)) fail("bound", isa, m, S, sizeof(T));
  }
}

template <class T, int S, class Table>
void run_isa(const char* isa, Table table, std::mt19937_64& rng) {
  const int W = table.lanes;
  const T inf = std::numeric_limits<T>::infinity();
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  const int longest = 8 * W * W + 3 * W + 3;
  for (int m = 1; m <= longest; m += (m < 4 * W ? 1 : 1 + static_cast<int>(rng() % (2 * W)))) {
    for (int rep = 0; rep < 6; ++rep) {
      std::vector<T> r(m), v(m);
      const int kind = rep % 3;  // 0: continuous, 1: few values (ties), 2: with +-inf / NaN
      for (int j = 0; j < m; ++j) {
        r[j] = kind == 1 ? static_cast<T>(rng() % 4) : static_cast<T>(uni(rng));
        v[j] = kind == 1 ? static_cast<T>(rng() % 3) : static_cast<T>(uni(rng) * 0.5);
      }
      if (kind == 2) {
        const int hits = 1 + static_cast<int>(rng() % 3);
        for (int q = 0; q < hits; ++q) {
          const T pick[3] = {inf, -inf, std::numeric_limits<T>::quiet_NaN()};
          r[rng() % m] = pick[rng() % (rep < 3 ? 1 : 3)];  // first rep: +inf only (forbidden)
        }
      }
      check_one<T, S>(table.min2_check_cache, nullptr, isa, W, 1, false, r, v);
      check_one<T, S>(nullptr, table.min2_cache, isa, W, 1, false, r, v);
      check_one<T, S>(nullptr, table.min2_cache2, isa, W, 2, false, r, v);
      if (m >= 2 * W) check_one<T, S>(table.min2_check_cache_wide, nullptr, isa, W, 2, true, r, v);
    }
  }
}

template <class T, int S>
void run_all(std::mt19937_64& rng) {
#ifdef TT_LAP_X86
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    run_isa<T, S>("avx512", avx512_kernels<T, S>(), rng);
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    run_isa<T, S>("avx2", avx2_kernels<T, S>(), rng);
  }
#endif
  run_isa<T, S>("base", base_kernels<T, S>(), rng);
}

}  // namespace

int main() {
  std::mt19937_64 rng(12345);
  run_all<float, 1>(rng);
  run_all<float, -1>(rng);
  run_all<double, 1>(rng);
  run_all<double, -1>(rng);
  std::printf("%ld cases, %ld failures\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}

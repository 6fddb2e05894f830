// A bounded workload for the native core under AddressSanitizer + UndefinedBehaviorSanitizer,
// built and run by .ci/sanitize.sh (once per LAP kernel set: TRAJTRANSFER_LAP_ISA). The sanitizers
// only see the code paths a run takes, so the workload walks the solver's routes on purpose:
//   * LAP single solves, float32 (exact and tolerant) and float64, min and max, square and both
//     rectangular orientations, padded row strides, on random, tied, integer, wide-range,
//     +inf-holed, constant-row and invalid (NaN / -inf) matrices, against brute force (sides <= 7);
//   * warm starts (same, perturbed and resampled matrices, foreign and absurd prices, random
//     previous assignments) against the same oracles;
//   * solve_batch on 1-3 threads against brute force per problem;
//   * integer matrices of sides 8-90 against a textbook Hungarian in float64 (exact on integers),
//     and matrices of 2^19+ entries (the two-thread split passes) against the float64 solve's own
//     dual certificate and the Hungarian;
//   * the matcher on random tiny specs (2-3 groups of size <= 4, 1-3 axes per tensor, K weighted
//     pairs): its objective against an independent float64 sum and its permutations against
//     brute force (no single group's permutation improves the objective), incremental adds,
//     clear_pairs, warm re-solves, every error path; and a mid-size spec over the GEMM paths;
//   * the matcher with factored pairs (G = delta^T inputs, random rows per pair and side, zero
//     included, mixed with dense pairs of the same tensors) on random tiny chains, against the
//     same oracles with the gradients formed in float64, and its error paths.
// Exit status 0 and "0 failures" when every check holds; the sanitizers report on stderr.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "lap/lap.hpp"
#include "match/matcher.hpp"

namespace lap = trajtransfer::lap;
namespace match = trajtransfer::match;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
long g_cases = 0, g_failures = 0;
std::mt19937_64 g_rng(20261206);

void fail(const std::string& what) {
  if (++g_failures <= 30) std::printf("FAIL %s\n", what.c_str());
}

int uniform_int(int lo, int hi) { return lo + static_cast<int>(g_rng() % static_cast<unsigned>(hi - lo + 1)); }
double uniform01() { return std::uniform_real_distribution<double>(0.0, 1.0)(g_rng); }

// ------------------------------------------------------------------------------------------------
// LAP oracles
// ------------------------------------------------------------------------------------------------

// What SciPy (and lap::solve) make of a matrix before any solve: NaN, or -inf when minimising
// (+inf when maximising), is invalid.
bool has_invalid(const std::vector<double>& c, bool maximize) {
  for (double x : c) {
    if (std::isnan(x) || x == (maximize ? kInf : -kInf)) return true;
  }
  return false;
}

// Optimal sum of s*C (s = -1 when maximising) over all injective maps of the shorter side into
// the longer one, and the sum of |C| on one optimal map (the scale of rounding errors); +inf
// when every map uses a forbidden entry.
std::pair<double, double> brute_force(const std::vector<double>& c, int n, int m, bool maximize) {
  const int k = std::min(n, m), big = std::max(n, m);
  std::vector<int> perm(static_cast<std::size_t>(big));
  std::iota(perm.begin(), perm.end(), 0);
  double best = kInf, best_abs = 0;
  do {
    double total = 0, abs_total = 0;
    for (int s = 0; s < k; ++s) {
      const double x = n <= m ? c[static_cast<std::size_t>(s * m + perm[s])]
                              : c[static_cast<std::size_t>(perm[s] * m + s)];
      total += maximize ? -x : x;
      abs_total += std::fabs(x);
    }
    if (total < best) {
      best = total;
      best_abs = abs_total;
    }
  } while (std::next_permutation(perm.begin(), perm.end()));
  return {best, best_abs};
}

// Textbook O(n^2 m) Hungarian method with potentials (n <= m) on s*C, forbidden entries priced
// kBig. On integer matrices every quantity is an integer below 2^53, so the result is exact; a
// feasible assignment costs far less than kBig, so an optimum that uses one is infeasible.
constexpr double kBig = 1e9;
double hungarian(const std::vector<double>& c, int n0, int m0, bool maximize) {
  const bool flip = n0 > m0;
  const int n = flip ? m0 : n0, m = flip ? n0 : m0;
  auto a = [&](int i, int j) {  // 1-based, in the n <= m orientation
    const double x = flip ? c[static_cast<std::size_t>((j - 1) * m0 + (i - 1))]
                          : c[static_cast<std::size_t>((i - 1) * m0 + (j - 1))];
    const double s = maximize ? -x : x;
    return s == kInf ? kBig : s;
  };
  std::vector<double> u(n + 1, 0), v(m + 1, 0), minv(m + 1);
  std::vector<int> p(m + 1, 0), way(m + 1, 0);
  std::vector<char> used(m + 1);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::fill(minv.begin(), minv.end(), kInf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const int i0 = p[j0];
      double delta = kInf;
      int j1 = 0;
      for (int j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double cur = a(i0, j) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= m; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  double total = 0;
  for (int j = 1; j <= m; ++j) {
    if (p[j] == 0) continue;
    const double x = a(p[j], j);
    if (x >= kBig) return kInf;
    total += x;
  }
  return total;
}

// ------------------------------------------------------------------------------------------------
// LAP runs
// ------------------------------------------------------------------------------------------------

template <class T>
struct Run {
  lap::Status status = lap::Status::ok;
  std::vector<std::int64_t> x;  // lap::Solution::col_of_row
  std::vector<T> u, v;
};

// Solve with the matrix copied into a buffer of row stride `stride` (>= m) whose padding is NaN
// and which ends right after the last row's m-th entry: reading the padding makes the solve
// report invalid entries, reading past the end is an ASan report.
template <class T>
Run<T> solve(const std::vector<T>& c, int n, int m, bool maximize, bool exact, int stride,
             const lap::WarmStart<T>& warm = {}) {
  std::vector<T> buf(static_cast<std::size_t>((n - 1) * stride + m),
                     std::numeric_limits<T>::quiet_NaN());
  for (int i = 0; i < n; ++i) {
    std::copy(c.begin() + i * m, c.begin() + (i + 1) * m, buf.begin() + i * stride);
  }
  Run<T> r;
  r.x.assign(static_cast<std::size_t>(std::min(n, m)), -7);
  r.u.assign(static_cast<std::size_t>(n), 0);
  r.v.assign(static_cast<std::size_t>(m), 0);
  lap::Solution<T> out{r.x.data(), r.u.data(), r.v.data()};
  r.status = lap::solve<T>(buf.data(), n, m, stride, maximize, out, warm, exact);
  return r;
}

struct Total {
  bool valid = false;
  double sum = 0;      // sum of s*C over the assignment, in row order of the shorter side
  double abs_sum = 0;  // sum of |C|
  double dual_abs = 0;  // sum of |u_i| + |v_j| over assigned pairs
};

// Check that `x` (lap::Solution's convention) is an injective map of the shorter side, and sum it.
template <class T>
Total total_of(const std::vector<double>& c, int n, int m, bool maximize,
               const std::vector<std::int64_t>& x, const std::vector<T>* u = nullptr,
               const std::vector<T>* v = nullptr) {
  Total t;
  const int k = std::min(n, m), big = std::max(n, m);
  std::vector<char> taken(static_cast<std::size_t>(big), 0);
  for (int s = 0; s < k; ++s) {
    const std::int64_t o = x[static_cast<std::size_t>(s)];
    if (o < 0 || o >= big || taken[static_cast<std::size_t>(o)]) return t;
    taken[static_cast<std::size_t>(o)] = 1;
    const int i = n <= m ? s : static_cast<int>(o), j = n <= m ? static_cast<int>(o) : s;
    const double e = c[static_cast<std::size_t>(i * m + j)];
    t.sum += maximize ? -e : e;
    t.abs_sum += std::fabs(e);
    if (u != nullptr && v != nullptr) {
      t.dual_abs += std::fabs(static_cast<double>((*u)[static_cast<std::size_t>(i)])) +
                    std::fabs(static_cast<double>((*v)[static_cast<std::size_t>(j)]));
    }
  }
  t.valid = true;
  return t;
}

// How far a solve's total may be from the optimum: float64 rounding, plus (float32 tolerant mode
// only) the documented acceptance of 2 FLT_EPSILON sum(|c| + |v|), doubled for the u side.
template <class T>
double tolerance(bool exact, const Total& got, double ref_abs) {
  double tol = 1e-11 * (got.abs_sum + ref_abs + got.dual_abs) + 1e-300;
  if (std::is_same<T, float>::value && !exact) {
    tol += 4 * static_cast<double>(std::numeric_limits<float>::epsilon()) *
           (got.abs_sum + got.dual_abs);
  }
  return tol;
}

// One outcome against the reference (status from the matrix, optimum `ref` = min s*C or +inf).
template <class T>
void expect(const std::string& ctx, const std::vector<double>& c, int n, int m, bool maximize,
            bool exact, lap::Status status, const std::vector<std::int64_t>& x, double ref,
            double ref_abs, const std::vector<T>* u = nullptr, const std::vector<T>* v = nullptr,
            bool integer = false) {
  ++g_cases;
  const lap::Status want = has_invalid(c, maximize) ? lap::Status::invalid_entries
                           : ref == kInf           ? lap::Status::infeasible
                                                   : lap::Status::ok;
  if (status != want) {
    fail(ctx + ": status " + std::to_string(static_cast<int>(status)) + ", expected " +
         std::to_string(static_cast<int>(want)));
    return;
  }
  if (want != lap::Status::ok) return;
  const Total t = total_of<T>(c, n, m, maximize, x, u, v);
  if (!t.valid) {
    fail(ctx + ": not an injective assignment");
    return;
  }
  const double tol = integer ? 0.0 : tolerance<T>(exact, t, ref_abs);
  if (!(std::fabs(t.sum - ref) <= tol)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, ": total %.17g, optimum %.17g (tolerance %.3g)", t.sum, ref, tol);
    fail(ctx + buf);
  }
}

// Matrix kinds; values are exactly representable in T.
enum Kind { kUniform, kTies, kInteger, kWide, kHoles, kConstantRows, kInvalid, kAllEqual, kKinds };

template <class T>
std::vector<T> make_matrix(int kind, int n, int m, bool maximize) {
  std::vector<T> c(static_cast<std::size_t>(n * m));
  const T forbidden = maximize ? -std::numeric_limits<T>::infinity()
                               : std::numeric_limits<T>::infinity();
  for (auto& x : c) {
    switch (kind) {
      case kTies: x = static_cast<T>(uniform_int(0, 2)); break;
      case kInteger: case kHoles: case kConstantRows: x = static_cast<T>(uniform_int(-20, 20)); break;
      case kWide: x = static_cast<T>(std::ldexp(uniform01() - 0.5, uniform_int(-30, 40))); break;
      case kAllEqual: x = static_cast<T>(1.5); break;
      default: x = static_cast<T>(uniform01() * 200 - 100); break;
    }
  }
  if (kind == kHoles) {
    const double p = (g_rng() % 3 + 1) * 0.2;
    for (auto& x : c) if (uniform01() < p) x = forbidden;
  }
  if (kind == kConstantRows) {
    for (int i = 0; i < n; ++i) {
      if (g_rng() % 3 == 0) std::fill(c.begin() + i * m, c.begin() + (i + 1) * m, static_cast<T>(i % 4));
    }
    if (n == m) {  // and a constant column now and then
      const int j = uniform_int(0, m - 1);
      for (int i = 0; i < n; ++i) c[static_cast<std::size_t>(i * m + j)] = static_cast<T>(3);
    }
  }
  if (kind == kInvalid) {
    const T bad[3] = {std::numeric_limits<T>::quiet_NaN(), -forbidden, forbidden};
    const int hits = uniform_int(1, 2);
    for (int h = 0; h < hits; ++h) c[g_rng() % c.size()] = bad[g_rng() % 3];
  }
  return c;
}

template <class T>
std::vector<double> widen(const std::vector<T>& c) { return {c.begin(), c.end()}; }

template <class T>
const char* tname() { return std::is_same<T, float>::value ? "float32" : "float64"; }

std::string shape_ctx(const char* what, const char* t, int kind, int n, int m, bool mx, bool ex) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %s kind %d %dx%d max %d exact %d", what, t, kind, n, m, mx, ex);
  return buf;
}

// Small problems: single (cold and warm) solves against brute force.
template <class T>
void lap_small(int reps) {
  for (int rep = 0; rep < reps; ++rep) {
    const int n = uniform_int(1, 7), m = uniform_int(1, 7);
    const int kind = rep % kKinds;
    const bool maximize = g_rng() & 1, exact = g_rng() & 1;
    const std::vector<T> c = make_matrix<T>(kind, n, m, maximize);
    const std::vector<double> c64 = widen(c);
    const auto [ref, ref_abs] = brute_force(c64, n, m, maximize);
    const int stride = m + (g_rng() % 2 ? 0 : uniform_int(1, 5));
    const Run<T> r = solve(c, n, m, maximize, exact, stride);
    const std::string ctx = shape_ctx("single", tname<T>(), kind, n, m, maximize, exact);
    expect<T>(ctx, c64, n, m, maximize, exact, r.status, r.x, ref, ref_abs, &r.u, &r.v);
    if (n != m || r.status != lap::Status::ok) continue;

    // Warm starts: a new matrix (same, perturbed or resampled), from the cold solve's prices and
    // assignment, or from foreign prices and a random assignment. Only speed may change.
    std::vector<T> c2 = c;
    const int change = uniform_int(0, 2);
    if (change == 1) {
      for (int h = 0; h < 2; ++h) c2[g_rng() % c2.size()] = make_matrix<T>(kind, 1, 1, maximize)[0];
    } else if (change == 2) {
      c2 = make_matrix<T>(kind == kInvalid ? kUniform : kind, n, m, maximize);
    }
    const std::vector<double> c2_64 = widen(c2);
    const auto [ref2, ref2_abs] = brute_force(c2_64, n, m, maximize);
    std::vector<T> prices = r.v;
    std::vector<std::int64_t> prev = r.x;
    const int source = uniform_int(0, 3);
    if (source == 1) {  // foreign finite prices, a random permutation
      for (auto& p : prices) p = static_cast<T>(uniform01() * 50 - 25);
      std::shuffle(prev.begin(), prev.end(), g_rng);
    } else if (source == 2) {  // prices near overflow: ignored by the solver
      for (auto& p : prices) p = static_cast<T>(std::numeric_limits<T>::max() / (g_rng() % 2 ? 2 : -3));
    } else if (source == 3) {  // prices far larger than the costs: the result is re-solved cold
      for (auto& p : prices) p = static_cast<T>(uniform01() * 1e30);
    }
    lap::WarmStart<T> warm{prices.data(), g_rng() % 4 == 0 ? nullptr : prev.data()};
    const Run<T> w = solve(c2, n, m, maximize, exact, m, warm);
    expect<T>(ctx + " warm source " + std::to_string(source) + " change " + std::to_string(change),
              c2_64, n, m, maximize, exact, w.status, w.x, ref2, ref2_abs, &w.u, &w.v);
  }
}

// solve_batch against brute force per problem.
template <class T>
void lap_batch(int reps) {
  for (int rep = 0; rep < reps; ++rep) {
    const int n = uniform_int(1, 6), m = uniform_int(1, 6), batch = uniform_int(1, 6);
    const bool maximize = g_rng() & 1, exact = g_rng() & 1;
    const int threads = uniform_int(0, 3);
    std::vector<T> costs;
    std::vector<int> kinds;
    for (int b = 0; b < batch; ++b) {
      kinds.push_back(static_cast<int>(g_rng() % kKinds));
      const std::vector<T> c = make_matrix<T>(kinds.back(), n, m, maximize);
      costs.insert(costs.end(), c.begin(), c.end());
    }
    const int k = std::min(n, m);
    std::vector<std::int64_t> x(static_cast<std::size_t>(batch * k), -7);
    std::vector<lap::Status> status(static_cast<std::size_t>(batch), lap::Status::ok);
    lap::solve_batch<T>(costs.data(), batch, n, m, maximize, x.data(), status.data(), threads, exact);
    for (int b = 0; b < batch; ++b) {
      const std::vector<double> c64(costs.begin() + b * n * m, costs.begin() + (b + 1) * n * m);
      const auto [ref, ref_abs] = brute_force(c64, n, m, maximize);
      const std::vector<std::int64_t> xb(x.begin() + b * k, x.begin() + (b + 1) * k);
      expect<T>(shape_ctx("batch", tname<T>(), kinds[static_cast<std::size_t>(b)], n, m, maximize,
                          exact) + " item " + std::to_string(b),
                c64, n, m, maximize, exact, status[static_cast<std::size_t>(b)], xb, ref, ref_abs);
    }
  }
}

// Integer matrices of sides 8-90 (cold and warm) against the Hungarian method: totals must be
// equal exactly, in float32 (either mode) as in float64.
template <class T>
void lap_medium(int reps) {
  const int kinds[4] = {kInteger, kTies, kHoles, kConstantRows};
  for (int rep = 0; rep < reps; ++rep) {
    const int n = uniform_int(8, 90), m = g_rng() % 2 ? n : uniform_int(8, 90);
    const int kind = kinds[rep % 4];
    const bool maximize = g_rng() & 1, exact = g_rng() & 1;
    const std::vector<T> c = make_matrix<T>(kind, n, m, maximize);
    const std::vector<double> c64 = widen(c);
    const double ref = hungarian(c64, n, m, maximize);
    const std::string ctx = shape_ctx("medium", tname<T>(), kind, n, m, maximize, exact);
    const Run<T> r = solve(c, n, m, maximize, exact, m);
    expect<T>(ctx, c64, n, m, maximize, exact, r.status, r.x, ref, 0, &r.u, &r.v, true);
    if (n != m || r.status != lap::Status::ok) continue;
    std::vector<T> c2 = c;  // a few rows redrawn: the warm pass keeps the others
    for (int h = 0; h < 3; ++h) {
      const int i = uniform_int(0, n - 1);
      for (int j = 0; j < m; ++j) c2[static_cast<std::size_t>(i * m + j)] = static_cast<T>(uniform_int(-20, 20));
    }
    const std::vector<double> c2_64 = widen(c2);
    const Run<T> w = solve(c2, n, m, maximize, exact, m, lap::WarmStart<T>{r.v.data(), r.x.data()});
    expect<T>(ctx + " warm", c2_64, n, m, maximize, exact, w.status, w.x,
              hungarian(c2_64, n, m, maximize), 0, &w.u, &w.v, true);
  }
}

// Problems of 2^19+ entries: the streaming passes split over the calling thread and a helper.
// The float64 solve's duals must certify its total (u_i + v_j <= c_ij, equality on the assigned
// pairs, which makes it optimal); float32 solves and warm re-solves must reach the same total.
void lap_large() {
  const int n = 740;  // 547600 entries >= 2^19
  for (int maximize = 0; maximize < 2; ++maximize) {
    std::vector<double> c64 = widen(make_matrix<double>(kInteger, n, n, maximize));
    for (int i = 0; i < n; i += 40) {  // constant rows: 19 of 740 > 1/64
      std::fill(c64.begin() + i * n, c64.begin() + (i + 1) * n, 5.0);
    }
    const std::vector<float> c32(c64.begin(), c64.end());
    const std::string ctx = std::string("large ") + (maximize ? "max" : "min");
    const Run<double> d = solve(c64, n, n, maximize, true, n);
    if (d.status != lap::Status::ok) {
      fail(ctx + ": float64 solve failed");
      continue;
    }
    const Total td = total_of<double>(c64, n, n, maximize, d.x);
    ++g_cases;
    double worst = 0, slack = 0;  // dual feasibility and complementary slackness of s*C
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        const double s = (maximize ? -1 : 1) * c64[static_cast<std::size_t>(i * n + j)];
        worst = std::max(worst, d.u[i] + d.v[j] - s);
        if (d.x[i] == j) slack = std::max(slack, std::fabs(d.u[i] + d.v[j] - s));
      }
    }
    const double dual_total = std::accumulate(d.u.begin(), d.u.end(), 0.0) +
                              std::accumulate(d.v.begin(), d.v.end(), 0.0);
    if (!td.valid || worst > 1e-9 || slack > 1e-9 || std::fabs(dual_total - td.sum) > 1e-6) {
      fail(ctx + ": float64 duals do not certify the assignment");
    }
    for (int exact = 0; exact < 2; ++exact) {
      const Run<float> f = solve(c32, n, n, maximize, exact, n);
      expect<float>(ctx + " float32 exact " + std::to_string(exact), c64, n, n, maximize, exact,
                    f.status, f.x, td.sum, 0, &f.u, &f.v, true);
      // 1% of the entries redrawn, then a warm re-solve from these prices and this assignment.
      std::vector<float> c2 = c32;
      for (std::size_t h = 0; h < c2.size() / 100; ++h) c2[g_rng() % c2.size()] = static_cast<float>(uniform_int(-20, 20));
      const std::vector<double> c2_64(c2.begin(), c2.end());
      const Run<double> cold = solve(c2_64, n, n, maximize, true, n);
      const Run<float> w = solve(c2, n, n, maximize, exact, n, lap::WarmStart<float>{f.v.data(), f.x.data()});
      expect<float>(ctx + " float32 warm exact " + std::to_string(exact), c2_64, n, n, maximize,
                    exact, w.status, w.x, total_of<double>(c2_64, n, n, maximize, cold.x).sum, 0,
                    &w.u, &w.v, true);
    }
  }
  // Rectangular, both orientations, with forbidden entries, against the Hungarian method.
  for (int flip = 0; flip < 2; ++flip) {
    const int n = flip ? 900 : 600, m = flip ? 600 : 900;  // 540000 entries
    std::vector<float> c = make_matrix<float>(kInteger, n, m, false);
    for (auto& x : c) if (g_rng() % 10 == 0) x = std::numeric_limits<float>::infinity();
    const std::vector<double> c64 = widen(c);
    const double ref = hungarian(c64, n, m, false);
    const Run<float> f = solve(c, n, m, false, true, m);
    expect<float>(std::string("large rectangular flip ") + std::to_string(flip), c64, n, m, false,
                  true, f.status, f.x, ref, 0, &f.u, &f.v, true);
  }
}

// ------------------------------------------------------------------------------------------------
// Matcher
// ------------------------------------------------------------------------------------------------

struct Problem {
  std::vector<std::int64_t> sizes;
  std::vector<match::TensorSpec> tensors;
  std::vector<std::vector<std::vector<float>>> targets, sources;  // [pair][tensor]
  std::vector<double> weights;
  bool integer = false;
};

std::int64_t numel(const match::TensorSpec& t) {
  return std::accumulate(t.shape.begin(), t.shape.end(), std::int64_t{1}, std::multiplies<>());
}

// <x, pi(y)> in float64 for one tensor, pi gathering every permuted axis (pi(S)[i_0, ..] =
// S[p_0[i_0], ..], numpy.take semantics), one index at a time.
template <class T>
double tensor_dot(const match::TensorSpec& ts, const std::vector<T>& x, const std::vector<T>& y,
                  const std::vector<std::vector<std::int64_t>>& perms) {
  const std::size_t rank = ts.shape.size();
  std::vector<std::int64_t> idx(rank, 0);
  const std::int64_t count = numel(ts);
  double dot = 0;
  for (std::int64_t flat = 0; flat < count; ++flat) {
    std::int64_t rest = flat, src = 0, stride = 1;
    for (std::size_t a = rank; a-- > 0;) {
      idx[a] = rest % ts.shape[a];
      rest /= ts.shape[a];
    }
    for (std::size_t a = rank; a-- > 0;) {
      const int g = ts.groups[a];
      src += (g < 0 ? idx[a] : perms[static_cast<std::size_t>(g)][static_cast<std::size_t>(idx[a])]) * stride;
      stride *= ts.shape[a];
    }
    dot += static_cast<double>(x[static_cast<std::size_t>(flat)]) *
           static_cast<double>(y[static_cast<std::size_t>(src)]);
  }
  return dot;
}

// Independent float64 objective: sum_k w_k sum_t <T_k,t, pi(S_k,t)>.
double objective(const Problem& pb, const std::vector<std::vector<std::int64_t>>& perms) {
  double total = 0;
  for (std::size_t k = 0; k < pb.weights.size(); ++k) {
    double pair = 0;
    for (std::size_t t = 0; t < pb.tensors.size(); ++t) {
      pair += tensor_dot(pb.tensors[t], pb.targets[k][t], pb.sources[k][t], perms);
    }
    total += pb.weights[k] * pair;
  }
  return total;
}

// sum_k |w_k| sum_t ||T||_2 ||S||_2: bounds every term of the objective at any permutations (the
// scale for float32 rounding of the matcher's cost matrices).
double scale(const Problem& pb) {
  double s = 0;
  for (std::size_t k = 0; k < pb.weights.size(); ++k) {
    for (std::size_t t = 0; t < pb.tensors.size(); ++t) {
      double a = 0, b = 0;
      for (float x : pb.targets[k][t]) a += static_cast<double>(x) * x;
      for (float x : pb.sources[k][t]) b += static_cast<double>(x) * x;
      s += std::fabs(pb.weights[k]) * std::sqrt(a * b);
    }
  }
  return s;
}

void add_pair(Problem& pb) {
  std::vector<std::vector<float>> t, s;
  for (const auto& ts : pb.tensors) {
    for (auto* side : {&t, &s}) {
      std::vector<float> x(static_cast<std::size_t>(numel(ts)));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (auto& e : x) e = pb.integer ? static_cast<float>(uniform_int(-2, 2)) : normal(g_rng);
      side->push_back(std::move(x));
    }
  }
  pb.targets.push_back(std::move(t));
  pb.sources.push_back(std::move(s));
  const double int_weights[5] = {1, 2, -1, 0.5, 3};
  pb.weights.push_back(pb.integer ? int_weights[g_rng() % 5] : uniform01() * 4 - 2);
}

// A random tiny spec: 2-3 groups of size 1-4, 1-4 tensors of rank 1-3 whose axes are a group
// (at most once per tensor) or unpermuted; every group on at least one tensor.
Problem random_problem() {
  Problem pb;
  const int groups = uniform_int(2, 3);
  for (int g = 0; g < groups; ++g) pb.sizes.push_back(g_rng() % 8 == 0 ? 1 : uniform_int(2, 4));
  std::vector<char> used(static_cast<std::size_t>(groups), 0);
  const int count = uniform_int(1, 4);
  for (int t = 0; t < count; ++t) {
    match::TensorSpec ts;
    const int rank = uniform_int(1, 3);
    for (int a = 0; a < rank; ++a) {
      int g = -1;
      if (g_rng() % 10 < 7) {
        g = uniform_int(0, groups - 1);
        if (std::find(ts.groups.begin(), ts.groups.end(), g) != ts.groups.end()) g = -1;
      }
      ts.groups.push_back(g);
      ts.shape.push_back(g < 0 ? uniform_int(1, 3) : pb.sizes[static_cast<std::size_t>(g)]);
      if (g >= 0) used[static_cast<std::size_t>(g)] = 1;
    }
    pb.tensors.push_back(ts);
  }
  for (int g = 0; g < groups; ++g) {
    if (!used[static_cast<std::size_t>(g)]) pb.tensors.push_back({{pb.sizes[g], 2}, {g, -1}});
  }
  pb.integer = g_rng() % 3 == 0;
  const int pairs = uniform_int(1, 3);
  for (int k = 0; k < pairs; ++k) add_pair(pb);
  return pb;
}

std::string spec_ctx(const Problem& pb) {
  std::string s = "groups";
  for (auto n : pb.sizes) s += " " + std::to_string(n);
  s += "; tensors";
  for (const auto& t : pb.tensors) {
    s += " (";
    for (std::size_t a = 0; a < t.shape.size(); ++a) {
      s += (a ? "," : "") + std::to_string(t.shape[a]) + (t.groups[a] < 0 ? "" : ":g" + std::to_string(t.groups[a]));
    }
    s += ")";
  }
  return s + "; pairs " + std::to_string(pb.weights.size()) + (pb.integer ? " integer" : "");
}

bool add_to(match::Matcher& mt, const Problem& pb, std::size_t k) {
  std::vector<const float*> t, s;
  for (std::size_t i = 0; i < pb.tensors.size(); ++i) {
    t.push_back(pb.targets[k][i].data());
    s.push_back(pb.sources[k][i].data());
  }
  return mt.add(t.data(), s.data(), pb.weights[k]).ok();
}

bool is_perm(const std::vector<std::int64_t>& p, std::int64_t n) {
  std::vector<char> seen(static_cast<std::size_t>(n), 0);
  if (static_cast<std::int64_t>(p.size()) != n) return false;
  for (auto i : p) {
    if (i < 0 || i >= n || seen[static_cast<std::size_t>(i)]) return false;
    seen[static_cast<std::size_t>(i)] = 1;
  }
  return true;
}

using Perms = std::vector<std::vector<std::int64_t>>;

// A converged solve is a coordinate-wise optimum: no single group's permutation (all n_g! of
// them tried, the other groups held) beats it by more than float32 rounding of the cost terms
// (exact on integer data and weights), and its objective is the independent float64 one
// (`objective`, of scale `sc`).
template <class Oracle>
void check_against(const std::string& ctx, match::Matcher& mt,
                   const std::vector<std::int64_t>& sizes, const Oracle& objective, double sc,
                   bool integer, const match::SolveResult& r) {
  ++g_cases;
  for (std::size_t g = 0; g < sizes.size(); ++g) {
    if (r.perms.size() != sizes.size() || !is_perm(r.perms[g], sizes[g])) {
      fail(ctx + ": not a permutation");
      return;
    }
  }
  if (!r.converged) fail(ctx + ": did not converge");
  const double best = objective(r.perms);
  if (!(std::fabs(r.objective - best) <= 1e-12 * sc + 1e-300)) {
    fail(ctx + ": objective " + std::to_string(r.objective) + " != float64 " + std::to_string(best));
  }
  for (std::size_t s = 1; s < r.history.size(); ++s) {
    if (r.history[s] < r.history[s - 1] - 1e-6 * sc) fail(ctx + ": history decreases");
  }
  const double tol = (integer ? 1e-12 : 1e-5) * sc;
  for (std::size_t g = 0; g < sizes.size(); ++g) {
    std::vector<std::vector<std::int64_t>> trial = r.perms;
    std::vector<std::int64_t>& p = trial[g];
    std::iota(p.begin(), p.end(), 0);
    do {
      if (objective(trial) > best + tol) {
        fail(ctx + ": group " + std::to_string(g) + " can be improved");
        return;
      }
    } while (std::next_permutation(p.begin(), p.end()));
  }
  // objective() at other permutations (random ones) against the oracle too.
  std::vector<std::vector<std::int64_t>> other = r.perms;
  for (auto& p : other) std::shuffle(p.begin(), p.end(), g_rng);
  if (!(std::fabs(mt.objective(other) - objective(other)) <= 1e-12 * sc + 1e-300)) {
    fail(ctx + ": objective() at random permutations");
  }
}

void check_result(const std::string& ctx, match::Matcher& mt, const Problem& pb,
                  const match::SolveResult& r) {
  check_against(ctx, mt, pb.sizes, [&](const Perms& p) { return objective(pb, p); }, scale(pb),
                pb.integer, r);
}

match::SolveOptions random_options() {
  match::SolveOptions o;
  o.seed = g_rng() % 1000;
  o.warm_duals = g_rng() & 1;
  o.greedy_start = g_rng() % 4 == 0;
  return o;
}

// A matcher of pb's spec holding its pairs (null, and a failure noted, if that went wrong).
template <class P, class AddTo>
std::unique_ptr<match::Matcher> matcher_with_pairs(const std::string& ctx, const P& pb,
                                                   AddTo add_to_mt) {
  std::unique_ptr<match::Matcher> mt;
  if (!match::Matcher::create(pb.sizes, pb.tensors, mt).ok()) {
    fail(ctx + ": create failed");
    return nullptr;
  }
  for (std::size_t k = 0; k < pb.weights.size(); ++k) {
    if (!add_to_mt(*mt, pb, k)) {
      fail(ctx + ": add failed");
      return nullptr;
    }
  }
  return mt;
}

// After a first solve: `more` pairs one at a time, each with a warm re-solve from the previous
// permutations and duals; then clear_pairs and the same pairs again (GMT's per-step replacement).
template <class P, class AddPair, class AddTo, class Check>
void grow_and_clear(const std::string& ctx, match::Matcher& mt, P& pb, int more,
                    AddPair add_one, AddTo add_to_mt, Check check) {
  for (int i = 0; i < more; ++i) {
    add_one(pb);
    if (!add_to_mt(mt, pb, pb.weights.size() - 1)) fail(ctx + ": later add failed");
    match::SolveResult r;
    if (!mt.solve(nullptr, true, random_options(), r).ok()) fail(ctx + ": warm solve failed");
    else check(ctx + " + pair, warm", mt, pb, r);
  }
  mt.clear_pairs();
  mt.reserve(static_cast<std::int64_t>(pb.weights.size()));
  for (std::size_t k = 0; k < pb.weights.size(); ++k) add_to_mt(mt, pb, k);
  match::SolveResult r;
  if (!mt.solve(nullptr, g_rng() & 1, random_options(), r).ok()) fail(ctx + ": re-solve failed");
  else check(ctx + " cleared and re-added", mt, pb, r);
}

void matcher_tiny(int reps) {
  for (int rep = 0; rep < reps; ++rep) {
    Problem pb = random_problem();
    const std::string ctx = spec_ctx(pb);
    std::unique_ptr<match::Matcher> mt = matcher_with_pairs(ctx, pb, add_to);
    if (!mt) continue;
    // Start from the identity, or from random permutations.
    std::vector<std::vector<std::int64_t>> init;
    std::vector<const std::int64_t*> init_ptrs;
    if (g_rng() & 1) {
      for (auto n : pb.sizes) {
        std::vector<std::int64_t> p(static_cast<std::size_t>(n));
        std::iota(p.begin(), p.end(), 0);
        std::shuffle(p.begin(), p.end(), g_rng);
        init.push_back(p);
      }
      for (auto& p : init) init_ptrs.push_back(p.data());
    }
    match::SolveResult r;
    if (!mt->solve(init.empty() ? nullptr : init_ptrs.data(), false, random_options(), r).ok()) {
      fail(ctx + ": solve failed");
      continue;
    }
    check_result(ctx + " cold", *mt, pb, r);
    grow_and_clear(ctx, *mt, pb, 1, add_pair, add_to, check_result);
  }
}

// Factored pairs: a random tiny chain (2-3 groups; an input tensor (n_0, c), layers
// (n_g, n_(g-1)) with or without trailing (1, 1) axes, an output tensor (c, n_last), biases),
// each (pair, tensor) of matrix layout factored on both sides with probability 2/3, with 0-3
// rows per side, else dense. The oracle forms every gradient in float64.
struct FSide {
  std::vector<float> dense, delta, inputs;
  std::int64_t rows = -1;  // -1: dense
  std::vector<double> g;   // the gradient in float64, in the tensor's layout
};

struct FProblem {
  std::vector<std::int64_t> sizes;
  std::vector<match::TensorSpec> tensors;
  std::vector<std::vector<FSide>> targets, sources;  // [pair][tensor]
  std::vector<double> weights;
};

bool takes_factors(const match::TensorSpec& ts) {
  if (ts.shape.size() < 2) return false;
  for (std::size_t a = 2; a < ts.shape.size(); ++a) {
    if (ts.shape[a] != 1 || ts.groups[a] >= 0) return false;
  }
  return true;
}

FSide random_side(const match::TensorSpec& ts, bool factored) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  FSide side;
  const std::int64_t count = numel(ts);
  if (!factored) {
    side.dense.resize(static_cast<std::size_t>(count));
    for (auto& x : side.dense) x = normal(g_rng);
    side.g.assign(side.dense.begin(), side.dense.end());
    return side;
  }
  const std::int64_t n_out = ts.shape[0], n_in = count / n_out;
  side.rows = uniform_int(0, 3);
  side.delta.resize(static_cast<std::size_t>(side.rows * n_out));
  side.inputs.resize(static_cast<std::size_t>(side.rows * n_in));
  for (auto& x : side.delta) x = normal(g_rng);
  for (auto& x : side.inputs) x = normal(g_rng);
  side.g.assign(static_cast<std::size_t>(count), 0.0);
  for (std::int64_t r = 0; r < side.rows; ++r) {
    for (std::int64_t i = 0; i < n_out; ++i) {
      for (std::int64_t c = 0; c < n_in; ++c) {
        side.g[static_cast<std::size_t>(i * n_in + c)] +=
            static_cast<double>(side.delta[static_cast<std::size_t>(r * n_out + i)]) *
            side.inputs[static_cast<std::size_t>(r * n_in + c)];
      }
    }
  }
  return side;
}

void add_fpair(FProblem& pb) {
  std::vector<FSide> t, s;
  for (const auto& ts : pb.tensors) {
    const bool factored = takes_factors(ts) && g_rng() % 3 != 0;
    t.push_back(random_side(ts, factored));
    s.push_back(random_side(ts, factored));
  }
  pb.targets.push_back(std::move(t));
  pb.sources.push_back(std::move(s));
  pb.weights.push_back(uniform01() * 4 - 2);
}

FProblem random_chain() {
  FProblem pb;
  const int groups = uniform_int(2, 3);
  for (int g = 0; g < groups; ++g) pb.sizes.push_back(g_rng() % 8 == 0 ? 1 : uniform_int(2, 4));
  const auto layer = [&](std::int64_t n_out, int g_out, std::int64_t n_in, int g_in) {
    match::TensorSpec ts{{n_out, n_in}, {g_out, g_in}};
    if (g_rng() & 1) {  // a 1x1 convolution's kernel
      ts.shape.insert(ts.shape.end(), {1, 1});
      ts.groups.insert(ts.groups.end(), {-1, -1});
    }
    pb.tensors.push_back(ts);
  };
  layer(pb.sizes[0], 0, uniform_int(1, 3), -1);
  for (int g = 1; g < groups; ++g) layer(pb.sizes[g], g, pb.sizes[g - 1], g - 1);
  layer(uniform_int(1, 3), -1, pb.sizes.back(), groups - 1);
  pb.tensors.push_back({{pb.sizes[0]}, {0}});
  const int pairs = uniform_int(1, 3);
  for (int k = 0; k < pairs; ++k) add_fpair(pb);
  return pb;
}

bool add_fto(match::Matcher& mt, const FProblem& pb, std::size_t k) {
  std::vector<match::TensorInput> t(pb.tensors.size()), s(pb.tensors.size());
  for (std::size_t i = 0; i < pb.tensors.size(); ++i) {
    for (auto [in, side] : {std::pair{&t[i], &pb.targets[k][i]}, {&s[i], &pb.sources[k][i]}}) {
      if (side->rows < 0) {
        in->dense = side->dense.data();
      } else {
        in->delta = side->delta.data();
        in->inputs = side->inputs.data();
        in->rows = side->rows;
      }
    }
  }
  return mt.add(t.data(), s.data(), pb.weights[k]).ok();
}

void check_factored(const std::string& ctx, match::Matcher& mt, const FProblem& pb,
                    const match::SolveResult& r) {
  double sc = 0;
  for (std::size_t k = 0; k < pb.weights.size(); ++k) {
    for (std::size_t t = 0; t < pb.tensors.size(); ++t) {
      double a = 0, b = 0;
      for (double x : pb.targets[k][t].g) a += x * x;
      for (double x : pb.sources[k][t].g) b += x * x;
      sc += std::fabs(pb.weights[k]) * std::sqrt(a * b);
    }
  }
  const auto oracle = [&](const Perms& perms) {
    double total = 0;
    for (std::size_t k = 0; k < pb.weights.size(); ++k) {
      for (std::size_t t = 0; t < pb.tensors.size(); ++t) {
        total += pb.weights[k] *
                 tensor_dot(pb.tensors[t], pb.targets[k][t].g, pb.sources[k][t].g, perms);
      }
    }
    return total;
  };
  check_against(ctx, mt, pb.sizes, oracle, sc, false, r);
}

void matcher_factored(int reps) {
  for (int rep = 0; rep < reps; ++rep) {
    FProblem pb = random_chain();
    std::string ctx = "factored chain, groups";
    for (auto n : pb.sizes) ctx += " " + std::to_string(n);
    std::unique_ptr<match::Matcher> mt = matcher_with_pairs(ctx, pb, add_fto);
    if (!mt) continue;
    match::SolveResult r;
    if (!mt->solve(nullptr, false, random_options(), r).ok()) {
      fail(ctx + ": solve failed");
      continue;
    }
    check_factored(ctx + " cold", *mt, pb, r);
    // Two more pairs: cached terms extended by new pairs and corrected.
    grow_and_clear(ctx, *mt, pb, 2, add_fpair, add_fto, check_factored);
  }
}

// Every error path: the status, and nothing stored after a failed add.
void matcher_errors() {
  using match::Status;
  auto expect_status = [](const char* what, match::Error e, Status want) {
    ++g_cases;
    if (e.status != want) fail(std::string("matcher error ") + what + ": status " + std::to_string(static_cast<int>(e.status)));
  };
  using Specs = std::vector<match::TensorSpec>;
  std::unique_ptr<match::Matcher> mt;
  expect_status("group twice on a tensor",
                match::Matcher::create({3}, Specs{match::TensorSpec{{3, 3}, {0, 0}}}, mt), Status::bad_spec);
  expect_status("unknown group",
                match::Matcher::create({3}, Specs{match::TensorSpec{{3}, {1}}}, mt), Status::bad_spec);
  expect_status("size mismatch",
                match::Matcher::create({3}, Specs{match::TensorSpec{{4}, {0}}}, mt), Status::size_mismatch);
  expect_status("group of size 0",
                match::Matcher::create({0}, Specs{match::TensorSpec{{0}, {0}}}, mt), Status::size_mismatch);
  if (!match::Matcher::create({3, 2}, Specs{match::TensorSpec{{3, 2}, {0, 1}}, match::TensorSpec{{2}, {-1}}}, mt).ok()) {
    fail("matcher error: valid spec refused");
    return;
  }
  match::SolveResult r;
  expect_status("solve before add", mt->solve(nullptr, false, {}, r), Status::no_pairs);
  std::vector<float> a(6, 1.0f), b(2, 1.0f), bad(6, 1.0f);
  bad[4] = std::numeric_limits<float>::quiet_NaN();
  const float* t[2] = {a.data(), b.data()};
  const float* s_bad[2] = {bad.data(), b.data()};
  expect_status("NaN", mt->add(t, s_bad, 1.0), Status::non_finite);
  ++g_cases;
  if (mt->num_pairs() != 0) fail("matcher error: a failed add stored a pair");
  expect_status("inf weight", mt->add(t, t, kInf), Status::bad_argument);
  expect_status("valid add", mt->add(t, t, 1.0), Status::ok);
  std::vector<std::int64_t> p0 = {0, 0, 1}, p1 = {1, 0};
  const std::int64_t* init[2] = {p0.data(), p1.data()};
  expect_status("not a permutation", mt->solve(init, false, {}, r), Status::bad_init);
  match::SolveOptions o;
  o.max_sweeps = -1;
  expect_status("max_sweeps < 0", mt->solve(nullptr, false, o, r), Status::bad_argument);
  o.max_sweeps = 5;
  o.tol = std::nan("");
  expect_status("tol NaN", mt->solve(nullptr, false, o, r), Status::bad_argument);
  expect_status("valid solve", mt->solve(nullptr, false, {}, r), Status::ok);
  // Factors: (3, 2) takes them, (2,) and a kernel with a permuted trailing axis do not.
  if (!match::Matcher::create({3, 2}, Specs{match::TensorSpec{{3, 2}, {0, -1}}, match::TensorSpec{{2}, {1}},
                                            match::TensorSpec{{3, 1, 2}, {0, -1, 1}}}, mt).ok()) {
    fail("matcher error: valid factor spec refused");
    return;
  }
  std::vector<float> d(6, 1.0f), in(4, 1.0f), k3(6, 1.0f), d_bad(6, 1.0f);
  d_bad[1] = std::numeric_limits<float>::infinity();
  match::TensorInput ok[3], half[3], wrong[3], nan[3];
  ok[0] = {nullptr, d.data(), in.data(), 2};
  ok[1].dense = b.data();
  ok[2].dense = k3.data();
  std::copy(ok, ok + 3, half);
  half[0] = {a.data(), nullptr, nullptr, 0};
  std::copy(ok, ok + 3, wrong);
  wrong[1] = {nullptr, d.data(), in.data(), 1};
  std::copy(ok, ok + 3, nan);
  nan[0] = {nullptr, d_bad.data(), in.data(), 2};
  expect_status("factors on one side only", mt->add(ok, half, 1.0), Status::bad_factors);
  expect_status("factors for a vector", mt->add(wrong, wrong, 1.0), Status::bad_factors);
  std::copy(ok, ok + 3, wrong);
  wrong[2] = {nullptr, d.data(), in.data(), 1};
  expect_status("factors with a permuted trailing axis", mt->add(wrong, wrong, 1.0),
                Status::bad_factors);
  expect_status("inf in a factor", mt->add(ok, nan, 1.0), Status::non_finite);
  ++g_cases;
  if (mt->num_pairs() != 0) fail("matcher error: a failed factored add stored a pair");
  expect_status("valid factored add", mt->add(ok, ok, 1.0), Status::ok);
  expect_status("valid factored solve", mt->solve(nullptr, false, {}, r), Status::ok);
}

// A mid-size chain (rank-2 and rank-4 tensors, both axes permuted, K = 3) and a 3-axis tensor of
// 1.18 M floats: the GEMM, delta-update and threaded-copy paths, each checked against the
// independent objective at the result and at the identity.
void matcher_medium() {
  for (int variant = 0; variant < 2; ++variant) {
    Problem pb;
    if (variant == 0) {
      pb.sizes = {48, 40, 32};
      pb.tensors = {{{48, 12}, {0, -1}}, {{48}, {0}}, {{40, 48, 3, 3}, {1, 0, -1, -1}},
                    {{40}, {1}}, {{32, 40}, {2, 1}}, {{32}, {2}}, {{10, 32}, {-1, 2}}};
    } else {
      pb.sizes = {128, 96, 96};
      pb.tensors = {{{128, 96, 96}, {0, 1, 2}}, {{128}, {0}}};
    }
    const int pairs = variant == 0 ? 3 : 1;
    for (int k = 0; k < pairs; ++k) add_pair(pb);
    std::unique_ptr<match::Matcher> mt;
    if (!match::Matcher::create(pb.sizes, pb.tensors, mt).ok()) {
      fail("medium create");
      continue;
    }
    for (std::size_t k = 0; k < pb.weights.size(); ++k) add_to(*mt, pb, k);
    match::SolveOptions o;
    o.max_sweeps = variant == 0 ? 100 : 3;
    match::SolveResult r;
    ++g_cases;
    if (!mt->solve(nullptr, false, o, r).ok()) {
      fail("medium solve");
      continue;
    }
    const double sc = scale(pb);
    if (!(std::fabs(r.objective - objective(pb, r.perms)) <= 1e-12 * sc)) fail("medium objective");
    std::vector<std::vector<std::int64_t>> ident;
    for (auto n : pb.sizes) {
      ident.emplace_back(static_cast<std::size_t>(n));
      std::iota(ident.back().begin(), ident.back().end(), 0);
    }
    if (!(std::fabs(mt->objective(ident) - objective(pb, ident)) <= 1e-12 * sc)) fail("medium objective() at the identity");
    if (r.objective < r.history.front() - 1e-9 * sc) fail("medium: worse than the start");
  }
}

}  // namespace

int main(int argc, char** argv) {
  // One argument multiplies the count of random cases (default 1; .ci/sanitize.sh runs 2).
  const int scale_reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 1;
  std::printf("LAP kernels: %s\n", lap::simd_level());
  match::set_blas_threads(2);
  lap_small<double>(1500 * scale_reps);
  lap_small<float>(1500 * scale_reps);
  lap_batch<double>(150 * scale_reps);
  lap_batch<float>(150 * scale_reps);
  lap_medium<double>(40 * scale_reps);
  lap_medium<float>(40 * scale_reps);
  lap_large();
  matcher_errors();
  matcher_tiny(150 * scale_reps);
  matcher_factored(100 * scale_reps);
  matcher_medium();
  std::printf("%ld cases, %ld failures\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}

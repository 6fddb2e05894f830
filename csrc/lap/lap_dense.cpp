// Dense exact LAP: Jonker & Volgenant (1987) column reduction, reduction transfer and augmenting
// row reduction, then shortest augmenting paths (Dijkstra with explicit duals, as in Crouse 2016)
// for the rows still free. Square finite problems take the full JV route; rectangular problems and
// problems with forbidden (+inf) pairs skip the reductions, which assume a finite square matrix,
// and run the shortest-path phase from feasible duals (u = row minima, v = 0). No sentinel
// "big" values are ever substituted for +inf: a shortest path of infinite length means infeasible.
#include "lap/lap.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace trajtransfer::lap {
namespace {

using idx = std::int64_t;

template <class T>
constexpr T kInf = std::numeric_limits<T>::infinity();

struct Scan {
  bool invalid = false;    // NaN or -inf (after the sign flip)
  bool forbidden = false;  // at least one +inf (after the sign flip)
};

template <class T>
Scan scan_entries(const T* c, idx n, idx m, idx stride, bool maximize) {
  Scan s;
  for (idx i = 0; i < n; ++i) {
    const T* row = c + i * stride;
    bool bad = false, inf = false;
    for (idx j = 0; j < m; ++j) {
      const T x = maximize ? -row[j] : row[j];
      bad |= (x != x) || (x == -kInf<T>);
      inf |= (x == kInf<T>);
    }
    s.invalid |= bad;
    s.forbidden |= inf;
  }
  return s;
}

// Minimisation solver state for one problem with n <= m, finite or +inf entries, no NaN/-inf.
template <class T>
class Solver {
 public:
  Solver(const T* c, idx n, idx m, idx stride) : c_(c), n_(n), m_(m), stride_(stride) {
    u_.assign(n, T(0));
    v_.assign(m, T(0));
    x_.assign(n, -1);
    y_.assign(m, -1);
  }

  const T* row(idx i) const { return c_ + i * stride_; }

  // JV initialisation for a square, finite matrix. Fills free_ with the rows left unassigned.
  void reduce_square() {
    std::vector<idx> arg(m_, 0);
    std::vector<int> matches(n_, 0);
    // Column minima, row by row so that the inner loop is contiguous.
    {
      const T* r0 = row(0);
      for (idx j = 0; j < m_; ++j) v_[j] = r0[j];
      for (idx i = 1; i < n_; ++i) {
        const T* r = row(i);
        for (idx j = 0; j < m_; ++j) {
          const bool lt = r[j] < v_[j];
          v_[j] = lt ? r[j] : v_[j];
          arg[j] = lt ? i : arg[j];
        }
      }
    }
    // Column reduction, last column first (as in the original), one column per row at most.
    for (idx j = m_ - 1; j >= 0; --j) {
      const idx i = arg[j];
      if (++matches[i] == 1) {
        x_[i] = j;
        y_[j] = i;
      } else if (v_[j] < v_[x_[i]]) {
        const idx j1 = x_[i];
        x_[i] = j;
        y_[j] = i;
        y_[j1] = -1;
      } else {
        y_[j] = -1;
      }
    }
    // Reduction transfer: rows matched once hand their slack to their column's price.
    free_.clear();
    for (idx i = 0; i < n_; ++i) {
      if (matches[i] == 0) {
        free_.push_back(i);
      } else if (matches[i] == 1) {
        const idx j1 = x_[i];
        const T* r = row(i);
        T mu = kInf<T>;
        for (idx j = 0; j < m_; ++j) {
          const T h = r[j] - v_[j];
          mu = (j != j1 && h < mu) ? h : mu;
        }
        v_[j1] -= mu;
      }
    }
    augmenting_row_reduction(2);
  }

  // Warm start for a square problem: given column prices v, every row takes its cheapest reduced
  // column (or its previous column when that is still tight); conflicts and untight rows go free.
  void warm_square(const T* v_init, const idx* prev) {
    std::copy(v_init, v_init + m_, v_.begin());
    free_.clear();
    for (idx i = 0; i < n_; ++i) {
      const T* r = row(i);
      T best = kInf<T>;
      idx arg = -1;
      for (idx j = 0; j < m_; ++j) {
        const T h = r[j] - v_[j];
        if (h < best) {
          best = h;
          arg = j;
        }
      }
      idx want = arg;
      if (prev != nullptr) {
        const idx p = prev[i];
        if (p >= 0 && p < m_ && r[p] - v_[p] <= best) want = p;
      }
      if (want >= 0 && y_[want] < 0 && best < kInf<T>) {
        x_[i] = want;
        y_[want] = i;
      } else {
        free_.push_back(i);
      }
    }
  }

  // Augmenting row reduction (JV). Needs a finite matrix with m >= 2. Bounded: each pass handles
  // at most a few evictions per row, so ties and tiny price steps cannot make it loop for ever.
  void augmenting_row_reduction(int passes) {
    if (m_ < 2) return;
    for (int pass = 0; pass < passes; ++pass) {
      const idx prv = static_cast<idx>(free_.size());
      idx k = 0, numfree = 0;
      idx budget = 4 * n_ + 16;
      while (k < prv) {
        const idx i = free_[k++];
        const T* r = row(i);
        T umin = r[0] - v_[0], usub = kInf<T>;
        idx j1 = 0, j2 = -1;
        for (idx j = 1; j < m_; ++j) {
          const T h = r[j] - v_[j];
          if (h < usub) {
            if (h >= umin) {
              usub = h;
              j2 = j;
            } else {
              usub = umin;
              umin = h;
              j2 = j1;
              j1 = j;
            }
          }
        }
        idx i0 = y_[j1];
        const bool strict = umin < usub;
        if (strict) {
          v_[j1] -= usub - umin;
        } else if (i0 >= 0) {
          j1 = j2;
          i0 = y_[j2];
        }
        x_[i] = j1;
        y_[j1] = i;
        if (i0 >= 0) {
          x_[i0] = -1;
          if (strict && --budget > 0) {
            free_[--k] = i0;  // re-examine the evicted row at once
          } else {
            free_[numfree++] = i0;
          }
        }
      }
      free_.resize(numfree);
      if (numfree == 0) break;
    }
  }

  // Row duals consistent with the current prices: tight for assigned rows, row minima for free.
  void set_row_duals() {
    for (idx i = 0; i < n_; ++i) {
      const T* r = row(i);
      if (x_[i] >= 0) {
        u_[i] = r[x_[i]] - v_[x_[i]];
      } else {
        T best = kInf<T>;
        for (idx j = 0; j < m_; ++j) best = std::min(best, r[j] - v_[j]);
        u_[i] = best;
      }
    }
  }

  // Shortest augmenting path from free row `start`; false when no finite path exists.
  bool augment(idx start) {
    d_.assign(m_, kInf<T>);
    pred_.assign(m_, -1);
    done_.assign(m_, 0);
    visited_rows_.clear();
    visited_cols_.clear();
    T min_val = 0;
    idx i = start, sink = -1;
    while (sink < 0) {
      visited_rows_.push_back(i);
      const T* r = row(i);
      const T base = min_val - u_[i];
      T lowest = kInf<T>;
      idx jbest = -1;
      for (idx j = 0; j < m_; ++j) {
        if (done_[j]) continue;
        const T rc = base + r[j] - v_[j];
        if (rc < d_[j]) {
          d_[j] = rc;
          pred_[j] = i;
        }
        // Among equal distances prefer a free column: the path ends sooner.
        if (d_[j] < lowest || (d_[j] == lowest && y_[j] < 0 && (jbest < 0 || y_[jbest] >= 0))) {
          lowest = d_[j];
          jbest = j;
        }
      }
      if (jbest < 0 || !(lowest < kInf<T>)) return false;
      min_val = lowest;
      done_[jbest] = 1;
      visited_cols_.push_back(jbest);
      if (y_[jbest] < 0) {
        sink = jbest;
      } else {
        i = y_[jbest];
      }
    }
    // Dual update keeps u_i + v_j <= c_ij with equality on the new matching.
    u_[start] += min_val;
    for (idx k = 1; k < static_cast<idx>(visited_rows_.size()); ++k) {
      const idx ri = visited_rows_[k];
      u_[ri] += min_val - d_[x_[ri]];
    }
    for (idx cj : visited_cols_) v_[cj] -= min_val - d_[cj];
    // Flip the alternating path.
    idx j = sink;
    while (true) {
      const idx pi = pred_[j];
      y_[j] = pi;
      const idx prev = x_[pi];
      x_[pi] = j;
      if (pi == start) break;
      j = prev;
    }
    return true;
  }

  bool augment_free_rows() {
    for (idx i : free_) {
      if (x_[i] >= 0) continue;
      if (!augment(i)) return false;
    }
    free_.clear();
    return true;
  }

  void init_all_free() {
    free_.clear();
    for (idx i = 0; i < n_; ++i) free_.push_back(i);
  }

  const std::vector<idx>& x() const { return x_; }
  const std::vector<T>& u() const { return u_; }
  const std::vector<T>& v() const { return v_; }

 private:
  const T* c_;
  idx n_, m_, stride_;
  std::vector<T> u_, v_, d_;
  std::vector<idx> x_, y_, pred_, free_, visited_rows_, visited_cols_;
  std::vector<char> done_;
};

// Minimise over a matrix with n <= m, entries finite or +inf. Writes x (n) and duals.
template <class T>
Status solve_min(const T* c, idx n, idx m, idx stride, bool forbidden, const Solution<T>& out,
                 const WarmStart<T>& warm) {
  Solver<T> s(c, n, m, stride);
  const bool square = (n == m);
  if (square && warm.col_duals != nullptr) {
    s.warm_square(warm.col_duals, warm.col_of_row);
    if (!forbidden) s.augmenting_row_reduction(1);
  } else if (square && !forbidden && n >= 2) {
    s.reduce_square();
  } else {
    s.init_all_free();
  }
  s.set_row_duals();
  if (!s.augment_free_rows()) return Status::infeasible;
  const auto& x = s.x();
  if (forbidden) {
    for (idx i = 0; i < n; ++i) {
      if (!(c[i * stride + x[i]] < kInf<T>)) return Status::infeasible;
    }
  }
  std::copy(x.begin(), x.end(), out.col_of_row);
  if (out.row_duals != nullptr) std::copy(s.u().begin(), s.u().end(), out.row_duals);
  if (out.col_duals != nullptr) std::copy(s.v().begin(), s.v().end(), out.col_duals);
  return Status::ok;
}

}  // namespace

template <class T>
Status solve(const T* cost, idx n, idx m, idx row_stride, bool maximize, const Solution<T>& out,
             const WarmStart<T>& warm) {
  if (n == 0 || m == 0) return Status::ok;
  const Scan scan = scan_entries(cost, n, m, row_stride, maximize);
  if (scan.invalid) return Status::invalid_entries;

  // The minimisation works on rows <= cols; flip the sign and/or transpose into a buffer if needed.
  const bool transpose = n > m;
  const idx rn = transpose ? m : n, rm = transpose ? n : m;
  std::vector<T> buf;
  const T* c = cost;
  idx stride = row_stride;
  if (transpose || maximize) {
    buf.resize(static_cast<std::size_t>(rn * rm));
    const T sign = maximize ? T(-1) : T(1);
    if (transpose) {
      for (idx i = 0; i < n; ++i)
        for (idx j = 0; j < m; ++j) buf[j * rm + i] = sign * cost[i * row_stride + j];
    } else {
      for (idx i = 0; i < n; ++i)
        for (idx j = 0; j < m; ++j) buf[i * rm + j] = sign * cost[i * row_stride + j];
    }
    c = buf.data();
    stride = rm;
  }
  // In transposed orientation the row duals of the inner problem are the caller's column duals.
  Solution<T> inner = out;
  WarmStart<T> w = warm;
  if (transpose) {
    std::swap(inner.row_duals, inner.col_duals);
    w = WarmStart<T>{};  // warm starts are for square problems only
  }
  return solve_min(c, rn, rm, stride, scan.forbidden, inner, w);
}

template Status solve<float>(const float*, idx, idx, idx, bool, const Solution<float>&,
                             const WarmStart<float>&);
template Status solve<double>(const double*, idx, idx, idx, bool, const Solution<double>&,
                              const WarmStart<double>&);

}  // namespace trajtransfer::lap

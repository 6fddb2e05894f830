// Dense exact LAP: Jonker & Volgenant (1987) column reduction, reduction transfer and augmenting
// row reduction, then shortest augmenting paths with explicit duals (Crouse 2016) for the rows
// still free. Every pass is a contiguous vectorised row kernel (lap_kernels.hpp), so a contiguous
// problem is never copied; +inf marks a forbidden pair (no "big M"); float32 is solved in float32,
// checked in float64. Exact mode (the Python default) re-augments the rows not tight in float64 by
// float64 shortest paths over the float32 entries, so the assignment is optimal for the float64
// values, as SciPy's. Why each choice, with its measurements: docs/dev/performance.md.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lap/lap.hpp"
#include "lap/lap_kernels.hpp"
#include "lap/lap_parallel.hpp"
#include "lap/lap_profile.hpp"


namespace trajtransfer::lap {
namespace {

using detail::ArgMin;
using detail::EntryFlags;
using detail::idx;
using detail::kInf;
using detail::Kernels;
using detail::Min2;

thread_local SolveStats t_stats;  // see last_solve_stats()
thread_local InterruptPoll t_poll = nullptr;
thread_local std::chrono::steady_clock::time_point t_next_poll{};

template <class T>
struct Settled {
  idx col;
  T dist;   // final Dijkstra distance of the column
  T price;  // its price before the path masked it with -inf
};

// A warm start gives up for a cold solve when its prices or its previous assignment have moved
// too far. First on a sample, every kSampleStride-th row (1/8 of a pass lost): when the previous
// assignment's duality gap at the given prices exceeds kSampleGapRatio times the summed gaps
// between the rows' two smallest reduced costs (resampled entries), or when more than
// 1/kSampleConflicts of the sampled rows want a column another sampled row already took (shifted
// column prices: every row wants the same few columns). Then after the whole pass at
// kPassGapRatio; and during ARR and the augmenting paths once they have scanned kWarmScanBudget * n
// rows, twice what a cold solve's own ARR and paths take on uniform costs: a backstop that bounds
// what a missed detection costs (additive 1 % noise needs about 2 n: neither route wins there).
// Measurements per perturbation family: docs/dev/performance.md.
constexpr idx kSampleStride = 8;
constexpr double kSampleGapRatio = 8.0;
constexpr idx kSampleConflicts = 5;
constexpr double kPassGapRatio = 48.0;
constexpr idx kWarmScanBudget = 4;
// Also on the sample: a row whose gap exceeds kFarGapRatio mean spreads (its previous pair was
// redrawn, not nudged) needs an augmenting path of about gap / spread row scans, which the summed
// ratio hides among the other rows; when those paths, extrapolated to all rows, exceed
// kFarScans * n scans, a cold solve is cheaper than the warm start would be.
constexpr double kFarGapRatio = 64.0;
constexpr double kFarScans = 1.0;
// Exact float32 solves give up on the sample from a lower gap ratio. Their float64 repair after
// a warm solve that needed long augmenting paths in float32 (multiplicative noise of ~17 % and
// more: the sample's ratio is ~0.017 per 1 % of noise) scans up to 3x the rows it scans after a
// cold solve, which made the warm start 0.8x a cold one; below that the warm solve is 2-4x cheaper.
constexpr double kSampleGapRatioExact32 = 0.25;

// The streaming passes (warm row scan, cold column minima and transfer, float32 check) split over
// two threads from this many entries on (2^19: e.g. 725 x 725), in chunks of kChunkRows rows
// (lap_parallel.hpp). Smaller problems stay on one thread: a pass of 2^19 float32 entries takes
// ~0.05 ms, and waking the helper costs ~10-50 us. Batch workers never split (one solve per core).
#ifdef TT_LAP_SPLIT_MIN_ENTRIES  // development builds: A/B against the one-thread passes
constexpr idx kSplitMinEntries = TT_LAP_SPLIT_MIN_ENTRIES;
#else
constexpr idx kSplitMinEntries = idx{1} << 19;
#endif
constexpr idx kChunkRows = 32;

// The calling thread's spare row-cache buffer of element type X. The row caches are 128 KB and
// up from n = 1024, sizes that glibc serves with fresh pages (mmap, or a heap trimmed after the
// previous solve): page faults and a zero fill on every solve, a visible cost on warm ones. A
// solver takes the spare and hands its buffer back when done; a second solver alive on the
// same thread (cold restart, float64 re-solve) finds none and allocates its own.
template <class X>
std::vector<X>& spare_buffer() {
  thread_local std::vector<X> spare;
  return spare;
}

// At least n elements (contents undefined: row caches are read only where cache_ok_ says so).
template <class X>
void take_buffer(std::vector<X>& v, std::size_t n) {
  if (v.size() < n) std::swap(v, spare_buffer<X>());
  if (v.size() < n) v.resize(n);
}

template <class X>
void return_buffer(std::vector<X>& v) {
  std::vector<X>& spare = spare_buffer<X>();
  if (v.size() > spare.size()) std::swap(v, spare);
}

// Minimisation of S*C (S = +1 or -1) over a matrix with n <= m.
template <class T, int S>
class Solver {
 public:
  using I = detail::pidx<T>;

  // `rows` (optional, n entries): row i of the problem is row rows[i] of the matrix at `c`.
  Solver(const T* c, idx n, idx m, idx stride, const idx* rows = nullptr)
      : kp_(&detail::kernels<T, S>()), c_(c), rows_(rows), n_(n), m_(m), stride_(stride) {
    u_.assign(n, T(0));
    v_.assign(m, T(0));
    x_.assign(n, -1);
    y_.assign(m, -1);
    d_.resize(m);
    pred_.resize(m);
    split_ = splits(n, m);
  }
  // Whether an n x m problem splits its streaming passes (see kSplitMinEntries).
  static bool splits(idx n, idx m) { return n * m >= kSplitMinEntries && n >= 4 * kChunkRows; }
  ~Solver() { return_cache_buffers(); }
  // Hands the row-cache buffers to the thread's spare (also before a solver is replaced by a
  // fresh one, whose caches then reuse them).
  void return_cache_buffers() {
    return_buffer(cache_cols_);
    return_buffer(cache_vals_);
  }
  Solver(Solver&&) = default;
  Solver& operator=(Solver&&) = default;

  const T* row(idx i) const { return c_ + (rows_ != nullptr ? rows_[i] : i) * stride_; }
  T sc(idx i, idx j) const { return S > 0 ? row(i)[j] : -row(i)[j]; }

  // Pass 1: validation + column minima (v) and their rows (pred_ is borrowed as argmin storage).
  // Split over two threads (see lap_parallel.hpp): the helper keeps its own minima, merged
  // after the pass with ties to the lower row, as the one-thread pass keeps the first row.
  EntryFlags column_minima() {
    std::fill(v_.begin(), v_.end(), kInf<T>);
    std::fill(pred_.begin(), pred_.end(), I(0));
    std::vector<T> v1;
    std::vector<I> a1;
    if (split_) {
      v1.assign(static_cast<std::size_t>(m_), kInf<T>);
      a1.assign(static_cast<std::size_t>(m_), I(0));
    }
    EntryFlags f[2];
    detail::for_row_chunks(n_, kChunkRows, split_, [&](idx b, idx e, int t) {
      T* v = t == 0 ? v_.data() : v1.data();
      I* a = t == 0 ? pred_.data() : a1.data();
      EntryFlags loc;
      for (idx i = b; i < e; ++i) {
        const EntryFlags g = k().colmin(row(i), v, a, m_, static_cast<I>(i));
        loc.invalid |= g.invalid;
        loc.forbidden |= g.forbidden;
      }
      f[t].invalid |= loc.invalid;
      f[t].forbidden |= loc.forbidden;
    });
    if (split_) {
      for (idx j = 0; j < m_; ++j) {
        if (v1[j] < v_[j] || (v1[j] == v_[j] && a1[j] < pred_[j])) {
          v_[j] = v1[j];
          pred_[j] = a1[j];
        }
      }
    }
    return EntryFlags{f[0].invalid || f[1].invalid, f[0].forbidden || f[1].forbidden};
  }

  // JV column reduction + reduction transfer (pass 2) on a square finite matrix, after
  // column_minima(). With `lb` the float64 row bounds of the float32 check are taken on the way.
  void reduce_square(std::vector<double>* lb) {
    enable_row_caches();
    std::vector<int> matches(static_cast<std::size_t>(n_), 0);
    // A row holding several column minima keeps the lowest-priced one, on ties the lowest
    // column: with ARR's tie rule (lowest free column) a constant matrix gets the identity,
    // as SciPy returns it (its test for scipy issue #11602).
    for (idx j = m_ - 1; j >= 0; --j) {
      const idx i = pred_[j];
      if (++matches[i] == 1) {
        x_[i] = j;
        y_[j] = i;
      } else if (v_[j] <= v_[x_[i]]) {
        const idx j1 = x_[i];
        x_[i] = j;
        y_[j] = i;
        y_[j1] = -1;
      }
    }
    free_.clear();
    for (idx i = 0; i < n_; ++i) {
      if (matches[i] == 0) free_.push_back(i);
    }
    // Every assigned row holds a column whose price is its own entry (v_j = S*c_ij = column
    // minimum), so u = 0 is tight and exactly feasible, with the float64 bound exactly 0. When
    // (almost) every row got a column, as on nearly diagonal correlation-like costs, the
    // assignment is optimal or nearly so after this single pass: skip the transfer pass.
    if (static_cast<idx>(free_.size()) * 64 <= n_) {
      for (idx i = 0; i < n_; ++i) {
        if (matches[i] == 0) continue;
        u_[i] = T(0);
        if (lb != nullptr) {
          (*lb)[i] = 0.0;
          clean_[i] = 1;
        }
      }
      return;
    }
    // h = S*c - v >= 0 with h = 0 on the row's own column: the second smallest h is the
    // smallest over the other columns, the slack the row can hand to its column's price. Every
    // row reads the prices from before any transfer (JV's sequential transfer sees the earlier
    // rows' price cuts, which can only raise its slack): the rows are then independent, so the
    // pass splits over two threads, and the transfers are applied afterwards. Measured on the
    // uniform n = 1024 / 2048 cold solves (one thread): within noise of the sequential transfer.
    // The float64 bounds (float32 check) are taken on the way, row still hot, over the other
    // columns; the own column's term is added once its price is final. Prices only fall later,
    // so bounds from the earlier prices stay valid.
    std::vector<T> slack(static_cast<std::size_t>(n_), T(0));
    detail::for_row_chunks(n_, kChunkRows, split_, [&](idx b, idx e, int) {
      for (idx i = b; i < e; ++i) {
        if (matches[i] == 0) continue;
        const T* r = row(i);
        if (matches[i] == 1) {
          // A fresh scan that fills the row cache (cache_ok_ is set below, not here: one byte
          // per row written by both threads would bounce a cache line between the cores).
          const std::size_t at = static_cast<std::size_t>(i) * cache_stride();
          slack[i] = cache_ok_.empty()
                         ? k().min2(r, v_.data(), m_).m2
                         : k().min2_cache(r, v_.data(), m_, &cache_cols_[at],
                                          &cache_vals_[at], &cache_bound_[i])
                               .m2;
          if (lb != nullptr) {
            const idx j = x_[i];
            const double l0 = k().lb64(r, v_.data(), j);
            const double l1 = k().lb64(r + j + 1, v_.data() + j + 1, m_ - j - 1);
            (*lb)[i] = l0 < l1 ? l0 : l1;
          }
        } else if (lb != nullptr) {
          (*lb)[i] = k().lb64(r, v_.data(), m_);
        }
      }
    });
    for (idx i = 0; i < n_; ++i) {
      if (matches[i] == 0) continue;
      u_[i] = slack[i];  // 0 for rows holding several column minima (no transfer)
      if (matches[i] == 1) {
        if (!cache_ok_.empty()) cache_ok_[i] = 1;
        const idx j = x_[i];
        v_[j] -= slack[i];
        if (lb != nullptr) {
          const double own = static_cast<double>(sc(i, j)) - static_cast<double>(v_[j]);
          (*lb)[i] = own < (*lb)[i] ? own : (*lb)[i];
        }
      }
      if (lb != nullptr) clean_[i] = 1;
    }
  }

  // Rows take their cheapest reduced column given prices v (warm start, or column minima when
  // there are forbidden pairs); previous pairs are kept where they are still tight. One pass.
  // Returns false on invalid entries (validation is folded in).
  //
  // With a previous assignment and `give_up_ratio` > 0, every kSampleStride-th row goes first:
  // when their gap ratio (see warm_gap()) already exceeds give_up_ratio, or too many of them
  // conflict (see kSampleConflicts), the pass stops there and gave_up() is set (the caller
  // restarts cold, having read 1/kSampleStride of the matrix instead of all of it).
  // Any row order is valid: it only decides which of two rows wanting a column gets it.
  bool greedy_from_prices(const idx* prev, EntryFlags* flags, std::vector<double>* lb,
                          double give_up_ratio = 0, bool transfer = false) {
    free_.clear();
    if (lb != nullptr) track_cleanliness();
    enable_row_caches();
    if (transfer && prev != nullptr) slack_.assign(static_cast<std::size_t>(n_), T(0));
    const bool sample = prev != nullptr && give_up_ratio > 0 && n_ >= 8 * kSampleStride;
    // Rows are scanned (the pass over the matrix; split over two threads when large) and then
    // assigned in row order on one thread, so the split never changes a result.
    const bool split = split_ && !cache_ok_.empty();
    if (split) {
      scans_.resize(static_cast<std::size_t>(n_));
      // Every row's cache is filled by its scan; marking them all now keeps the scans from
      // writing one byte per row next to the other thread's (a cache line bouncing between the
      // cores). Nothing reads a cache before the pass is complete.
      std::fill(cache_ok_.begin(), cache_ok_.end(), pass_cache_depth());
    }
    auto stage = [&](idx count, auto row_of) {
      if (!split) {
        for (idx t = 0; t < count; ++t) {
          const idx i = row_of(t);
          assign_row(i, prev, scan_row(i, prev, flags, lb));
        }
        return;
      }
      EntryFlags f[2];
      // The row sample is short (1/8 of the rows): smaller chunks balance it better.
      const idx chunk = std::clamp<idx>(count / 16, 8, kChunkRows);
      detail::for_row_chunks(count, chunk, true, [&](idx b, idx e, int th) {
        EntryFlags loc;
        for (idx t = b; t < e; ++t) {
          const idx i = row_of(t);
          scans_[i] = scan_row(i, prev, &loc, lb);
        }
        f[th].invalid |= loc.invalid;
        f[th].forbidden |= loc.forbidden;
      });
      flags->invalid |= f[0].invalid || f[1].invalid;
      flags->forbidden |= f[0].forbidden || f[1].forbidden;
      for (idx t = 0; t < count; ++t) {
        const idx i = row_of(t);
        assign_row(i, prev, scans_[i]);
      }
    };
    if (sample) {
      const idx sampled = (n_ + kSampleStride - 1) / kSampleStride;
      sample_gaps_.clear();
      collect_gaps_ = true;
      stage(sampled, [](idx t) { return t * kSampleStride; });
      collect_gaps_ = false;
      t_stats.warm_rows_read = sampled;
      if (!flags->invalid && !flags->forbidden &&
          (warm_gap_ > give_up_ratio * warm_spread_ ||
           static_cast<idx>(free_.size()) * kSampleConflicts > sampled ||
           far_row_scans(sampled) > kFarScans * static_cast<double>(n_))) {
        gave_up_ = true;
        return true;
      }
      // The other rows, in order: row t + t / (kSampleStride - 1) + 1 skips the sampled ones.
      stage(n_ - (n_ + kSampleStride - 1) / kSampleStride,
            [](idx t) { return t + t / (kSampleStride - 1) + 1; });
    } else {
      stage(n_, [](idx t) { return t; });
    }
    if (prev != nullptr) {
      t_stats.warm_rows_read = n_;
      // With no row left free the assignment is already optimal: keep the given prices.
      if (transfer && !free_.empty()) transfer_slacks();
      slack_.clear();
    }
    return !flags->invalid;
  }

  // JV's reduction transfer on a warm start: a row holding its cheapest column hands its slack
  // (second minus first smallest reduced cost) to that column's price, so the rows left free
  // find contested columns dearer and the vacated ones relatively cheaper. Prices only fall,
  // so every row stays feasible and its cache valid; a later row's slack, read at the prices
  // of the pass, only understates its true slack. Uniform 1 % noise re-solves, n = 1024: ARR's
  // steps 5755 -> 3795 (float64), instructions -8 % (float64) and -2 to -5 % (float32 without
  // the exact check). Applied after the pass, whose keep/give-up decisions read the previous
  // prices.
  void transfer_slacks() {
    for (idx i = 0; i < n_; ++i) {
      const T s = slack_[i];
      if (!(s > T(0)) || !(s < kInf<T>)) continue;
      const idx j = x_[i];
      const T moved = v_[j] - s;
      if (moved < v_[j]) {  // a slack below half the price's ulp changes nothing
        v_[j] = moved;
        u_[i] += s;
      }
    }
  }

  // The augmenting-path scans the sampled rows' far gaps predict for the whole matrix (see
  // kFarGapRatio): each far row about gap / mean spread, at most n, times the sampling stride.
  double far_row_scans(idx sampled) const {
    const double mean_spread = warm_spread_ / static_cast<double>(sampled);
    double scans = 0;
    for (double g : sample_gaps_) {
      if (g > kFarGapRatio * mean_spread) {
        scans += std::min(static_cast<double>(n_), g / mean_spread);
      }
    }
    return scans * kSampleStride;
  }

  // What the warm pass learns about one row: its two smallest reduced costs and S*c at its
  // previous column (read while the row is in cache; assign_row() needs it later).
  struct RowScan {
    Min2<T> mm;
    T cp;
  };

  // The pass over row i of greedy_from_prices() (touches row i's own state only).
  RowScan scan_row(idx i, const idx* prev, EntryFlags* flags, std::vector<double>* lb) {
    Min2<T> mm;
    if (cache_ok_.empty()) {
      mm = k().min2_check(row(i), v_.data(), m_, flags);
    } else {
      const std::size_t at = static_cast<std::size_t>(i) * cache_stride();
      const auto scan = pass_cache_depth() == 2 ? k().min2_check_cache_wide : k().min2_check_cache;
      mm = scan(row(i), v_.data(), m_, flags, &cache_cols_[at], &cache_vals_[at], &cache_bound_[i]);
      if (!cache_ok_[i]) cache_ok_[i] = pass_cache_depth();
    }
    if (lb != nullptr && cache_ok_.empty()) {
      (*lb)[i] = k().lb64(row(i), v_.data(), m_);  // row still hot in cache
      clean_[i] = 1;
    }  // else verified() derives the bound from the row cache (W reads instead of a pass)
    T cp = T(0);
    if (prev != nullptr && prev[i] >= 0 && prev[i] < m_) cp = sc(i, prev[i]);
    return RowScan{mm, cp};
  }

  // Row i takes its previous column when still tight, else its cheapest one when free, else
  // stays free (greedy_from_prices(), in row order).
  void assign_row(idx i, const idx* prev, const RowScan& rs) {
    const Min2<T>& mm = rs.mm;
    idx want = mm.i1;
    if (prev != nullptr) {
      const idx p = prev[i];
      if (p >= 0 && p < m_) {
        if (keeps_previous(rs.cp, v_[p], mm.m1)) want = p;
        else TT_LAP_PROFILE_COUNT(profile::Event::nontight, 1);
        const double g = static_cast<double>(rs.cp - v_[p]) - static_cast<double>(mm.m1);
        if (g > 0) warm_gap_ += g;  // +inf when p became forbidden
        if (g > 0 && collect_gaps_) sample_gaps_.push_back(g);
      }
    }
    if (mm.m2 < kInf<T>) warm_spread_ += static_cast<double>(mm.m2) - static_cast<double>(mm.m1);
    u_[i] = mm.m1;
    if (mm.m1 < kInf<T> && y_[want] < 0) {
      x_[i] = want;
      y_[want] = i;
      if (!slack_.empty() && want == mm.i1) slack_[i] = mm.m2 - mm.m1;
    } else {
      free_.push_back(i);
    }
  }

  // How far the previous assignment is from optimal at the given prices (sum over rows of the
  // reduced cost of the previous column minus the row minimum: the duality gap of that pair),
  // against the sum of the rows' gaps between their two smallest reduced costs. Filled by
  // greedy_from_prices(); see solve_min() for how the ratio chooses between warm and cold.
  double warm_gap() const { return warm_gap_; }
  double warm_spread() const { return warm_spread_; }
  bool gave_up() const { return gave_up_; }

  // A row-scan budget for ARR and the augmenting paths (a warm start's; none by default): once
  // t_stats has counted `scans` more of them, both stop early and over_budget() is set.
  void limit_scans(std::int64_t scans) {
    scan_limit_ = t_stats.arr_scans + t_stats.path_scans + scans;
  }
  bool over_budget() {
    if (scan_limit_ < 0 || t_stats.arr_scans + t_stats.path_scans <= scan_limit_) return false;
    gave_up_ = true;
    return true;
  }

  // Whether row i may keep its previous column p at row minimum m1: p is a minimum up to one
  // rounding of the operands. The duals of an optimal solve are only tight to about an ulp
  // (their updates round), so an exact test freed ~9 % of the rows of an unchanged uniform
  // n = 1024 float32 problem and moved their prices; what such a pair can cost is of the order
  // of that rounding (and float32 solves end with their float64 check anyway).
  bool keeps_previous(T c, T vp, T m1) const {
    const T h = c - vp;
    if (h <= m1) return true;
    const T tol = std::numeric_limits<T>::epsilon() * (std::fabs(c) + std::fabs(vp));
    return tol < kInf<T> && h - m1 <= tol;  // never keeps a pair that became forbidden
  }

  // Row caches for the reductions (transfer + ARR), where a row is re-examined many times (each
  // eviction) while only a few prices have moved, and always downwards. cache_ok_[i] is the depth
  // of row i's certificate (0: none; see min2_body()); room is kept for depth 2.
  std::size_t cache_stride() const { return 2 * static_cast<std::size_t>(k().lanes); }

  // Whether a failed cache is refilled two deep (2W columns) rather than one (W): it pays where a
  // full rescan (m / W vectors) is long against re-examining 2W cached columns, from about
  // m = 8 W^2 (measured per instruction set: docs/dev/performance.md).
  bool deep_refill() const { return m_ >= 8 * idx{k().lanes} * k().lanes; }
  // Size (in lane widths) of the certificate the warm pass leaves: 2W columns from two lane sets
  // (min2_wide_body(), as cheap as one) where refills are deep and 2W is at most 16 columns:
  // beyond that, re-examining the cached columns costs more than the rescans it saves.
  char pass_cache_depth() const { return deep_refill() && k().lanes <= 8 ? 2 : 1; }
  void enable_row_caches() {
    if (m_ < k().lanes) return;
    take_buffer(cache_cols_, static_cast<std::size_t>(n_) * cache_stride());
    take_buffer(cache_vals_, static_cast<std::size_t>(n_) * cache_stride());
    cache_bound_.assign(static_cast<std::size_t>(n_), T(0));
    cache_ok_.assign(static_cast<std::size_t>(n_), 0);
  }

  // Smallest and second smallest of S*c_ij - v_j. When row i has a cache from an earlier scan, the
  // W cached columns are re-evaluated: every other column's value is >= the cached bound (prices
  // only decreased since), so two cached values at or below the bound are the exact answer. Else
  // a full scan, which refreshes the cache.
  Min2<T> row_min2(idx i) {
    if (cache_ok_.empty()) return k().min2(row(i), v_.data(), m_);
    const std::size_t at = static_cast<std::size_t>(i) * cache_stride();
    I* cols = &cache_cols_[at];
    if (cache_ok_[i]) {
      const T* cv = &cache_vals_[at];
      const std::size_t count = static_cast<std::size_t>(cache_ok_[i]) * k().lanes;
      Min2<T> mm{kInf<T>, -1, kInf<T>};
      for (std::size_t l = 0; l < count; ++l) mm.push(cv[l] - v_[cols[l]], cols[l]);
      if (mm.m2 <= cache_bound_[i]) return mm;
      TT_LAP_PROFILE_COUNT(profile::Event::cache_miss, 1);
    }
    ++t_stats.arr_scans;
    // A row whose cache failed is likely to be re-examined again: on long rows, refill it two
    // deep (see deep_refill()).
    if (deep_refill()) {
      cache_ok_[i] = 2;
      return k().min2_cache2(row(i), v_.data(), m_, cols, &cache_vals_[at], &cache_bound_[i]);
    }
    cache_ok_[i] = 1;
    return k().min2_cache(row(i), v_.data(), m_, cols, &cache_vals_[at], &cache_bound_[i]);
  }

  // Augmenting row reduction (JV). Needs a finite matrix with m >= 2. Bounded: each pass handles
  // a budget of immediate re-examinations, so ties and tiny price steps cannot make it loop for
  // ever.
  // `budget_per_row`: immediate re-examinations per pass and row; 0 = the square route's default.
  void augmenting_row_reduction(int passes, idx budget_per_row = 0) {
    TT_LAP_PROFILE_COUNT(profile::Event::arr_in, static_cast<long>(free_.size()));
    if (m_ < 2) return;
    for (int pass = 0; pass < passes; ++pass) {
      const idx prv = static_cast<idx>(free_.size());
      idx k = 0, numfree = 0;
      // Evictions are cheap with the row caches (a hit costs W column reads), so the budget grows
      // with n: (n / 512)^2 per row and pass, 4 up to n = 1535 as before, 64 at n = 4096, where
      // gradient-matching costs ran out of 16 and left 2-4x the free rows to the paths.
      const idx per_row = std::max<idx>(4, (n_ / 512) * (n_ / 512));
      idx budget = (budget_per_row > 0 ? budget_per_row : per_row) * n_ + 16;
      while (k < prv) {
        if (over_budget()) return;
        const idx i = free_[k++];
        const Min2<T> mm = row_min2(i);
        TT_LAP_PROFILE_COUNT(profile::Event::arr_steps, 1);
        const T umin = mm.m1, usub = mm.m2;
        idx j1 = mm.i1;
        idx i0 = y_[j1];
        bool strict = umin < usub;
        T tie_at = umin;
        if (strict) {
          // A gap below half the price's ulp (small reduced costs are finer than prices of the
          // costs' size; float32) leaves the price unchanged, and re-examining the evicted row at
          // once swaps the two rows until the budget runs out. Such a gap is a tie at the
          // prices' precision: take a column at the second minimum instead.
          const T moved = v_[j1] - (usub - umin);
          if (moved < v_[j1]) {
            v_[j1] = moved;
          } else {
            strict = false;
            tie_at = usub;
          }
        }
        if (!strict && i0 >= 0) {
          // Tie: take another column at the same reduced cost, preferring a free one.
          const idx j2 = second_min_column(i, j1, tie_at);
          TT_LAP_PROFILE_COUNT(profile::Event::ties, 1);
          j1 = j2;
          i0 = y_[j2];
        }
        x_[i] = j1;
        y_[j1] = i;
        u_[i] = usub;
        mark_dirty(i);
        if (i0 >= 0) {
          x_[i0] = -1;
          mark_dirty(i0);
          if (strict && --budget > 0) {
            free_[--k] = i0;  // re-examine the evicted row at once
          } else {
            free_[numfree++] = i0;
          }
        }
      }
      free_.resize(numfree);
      TT_LAP_PROFILE_COUNT(profile::free_after_pass(pass), static_cast<long>(numfree));
      if (numfree == 0) break;
    }
  }

  // Shortest augmenting path from free row `start`; false when no finite path exists or the
  // scan budget ran out (over_budget()).
  bool augment(idx start) {
    settled_.clear();
    T min_val = 0;
    idx i = start;
    ArgMin<T> am = k().relax_first(row(i), v_.data(), d_.data(), pred_.data(), m_, -u_[i],
                                  static_cast<I>(i));
    idx sink = -1;
    idx ties = 0;
    ++t_stats.paths;
    ++t_stats.path_scans;
    while (true) {
      if (am.arg < 0 || !(am.val < kInf<T>)) {
        for (const auto& s : settled_) v_[s.col] = s.price;
        return false;
      }
      idx j = am.arg;
      // A step that does not lengthen the path (a tie, e.g. 0/inf costs) may have left free
      // columns at the same distance: without a check the scan (lowest index first) settled
      // every tied assigned column first, O(n) scans per path (0/inf n = 2000: 2.3 s). Checked
      // at the 1st, 2nd, 4th, ... tie of a path: at most twice the steps a check at every tie
      // would take, and a few free-column reads per path where ties are common but harmless
      // (rank-1 costs, n = 1000: 10-20 % slower when checked at every tie).
      if (!settled_.empty() && am.val == min_val) ++ties;
      const bool check_tie = ties > 0 && (ties & (ties - 1)) == 0 && am.val == min_val;
      min_val = am.val;
      if (y_[j] >= 0 && (use_free_cols_ || check_tie)) {
        // Among columns at the same distance prefer a free one: the path ends at once.
        for (idx f : free_cols_) {
          if (d_[f] == min_val) {
            j = f;
            break;
          }
        }
      }
      settled_.push_back({j, d_[j], v_[j]});
      if (y_[j] < 0) {
        sink = j;
        break;
      }
      v_[j] = -kInf<T>;  // masks the column in later scans (S*c - (-inf) = +inf)
      d_[j] = kInf<T>;
      i = y_[j];
      am = k().relax(row(i), v_.data(), d_.data(), pred_.data(), m_, min_val - u_[i],
                    static_cast<I>(i));
      ++t_stats.path_scans;
      if (over_budget()) {
        // Warm paths can be few and n scans long: stop inside one (the caller restarts cold).
        for (const auto& s : settled_) v_[s.col] = s.price;
        return false;
      }
    }
    // Dual update keeps u_i + v_j <= S*c_ij with equality on the new matching.
    u_[start] += min_val;
    mark_dirty(start);
    for (std::size_t t = 0; t + 1 < settled_.size(); ++t) {
      const auto& s = settled_[t];
      const T delta = min_val - s.dist;
      u_[y_[s.col]] += delta;
      mark_dirty(y_[s.col]);
      v_[s.col] = s.price - delta;
    }
    v_[sink] = settled_.back().price;
    auto it = std::find(free_cols_.begin(), free_cols_.end(), sink);
    if (it != free_cols_.end()) {
      *it = free_cols_.back();
      free_cols_.pop_back();
    }
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

  Status augment_free_rows() {
    free_cols_.clear();
    for (idx j = 0; j < m_; ++j) {
      if (y_[j] < 0) free_cols_.push_back(j);
    }
    // Checked at every step only when few columns are free (square problems after the
    // reductions); otherwise on ties only (see augment()).
    use_free_cols_ = free_cols_.size() <= 64;
    idx done = 0;
    for (idx i : free_) {
      if (x_[i] >= 0) continue;
      if (over_budget()) return Status::ok;  // the caller sees gave_up() and restarts cold
      if (!augment(i)) return gave_up_ ? Status::ok : Status::infeasible;  // see over_budget()
      // Between paths the state is consistent; the clock is read once every 32 paths.
      if ((++done & 31) == 0 && interrupt_requested()) return Status::interrupted;
    }
    free_.clear();
    return Status::ok;
  }

  idx num_free() const { return static_cast<idx>(free_.size()); }

  void init_all_free() {
    free_.clear();
    for (idx i = 0; i < n_; ++i) free_.push_back(i);
  }

  void set_prices(const T* v) { std::copy(v, v + m_, v_.begin()); }
  void track_cleanliness() { clean_.assign(static_cast<std::size_t>(n_), 0); }

  // float64 verification of a float32 solve (tolerant mode, see lap.hpp): with lb_i the float64
  // row bounds (refresh_bounds()), (lb, v) is dual feasible, so sum_i (S*c_i,x(i) - v_x(i) - lb_i)
  // bounds how far the assignment can be from optimal; accepted within ~1 float32 ulp per row.
  // The sums are taken in row order, so the outcome does not depend on the split.
  bool verified(std::vector<double>& lb) const {
    refresh_bounds(lb);
    double gap = 0, scale = 0;
    for (idx i = 0; i < n_; ++i) {
      gap += own64(i) - lb[i];
      scale += std::fabs(static_cast<double>(sc(i, x_[i]))) +
               std::fabs(static_cast<double>(v_[x_[i]]));
    }
    const double tol = 2.0 * std::numeric_limits<float>::epsilon() * scale;  // ~1 ulp per row
    return std::isfinite(gap) && gap <= tol;
  }

  // Exact mode's check of a float32 solve (see lap.hpp). Float32 prices are exact in float64, so a
  // row whose own reduced cost equals its float64 bound lb_i is tight, and when every row is,
  // (lb, v) certifies the assignment for the float64 values of the entries. The other rows (where
  // float32 rounding hid a cheaper column, typically by an ulp: about a quarter of the rows of a
  // uniform problem, in every problem) are freed and re-augmented by shortest paths computed in
  // float64 over the float32 entries, from the float64 duals of the tight rows (u_i = S*c_ix - v_x,
  // feasible since lb_i <= min_j): a few short paths instead of a float64 copy and a new solve.
  // Returns false where the caller must re-solve in float64: a path of infinite length, or a
  // rectangular result whose certificate fails (see the end).
  bool exact_or_repaired(std::vector<double>& lb) {
    refresh_bounds(lb);
    std::vector<idx> loose;
    for (idx i = 0; i < n_; ++i) {
      if (!(own64(i) <= lb[i])) loose.push_back(i);
    }
    if (loose.empty()) return true;
    constexpr double inf = std::numeric_limits<double>::infinity();
    std::vector<double> vd(v_.begin(), v_.end()), d(static_cast<std::size_t>(m_));
    std::vector<std::int64_t> pred(static_cast<std::size_t>(m_));
    std::vector<Settled<double>> path;
    // Free columns: those of the freed rows. In a rectangular problem the columns left unassigned
    // by the float32 solve are instead held by m - n implicit dummy rows of zero cost (the square
    // extension): they keep a common, highest price `top` (the rectangular route leaves them at
    // their start price, 0, and prices only fall), so a path may pass through them but ends at a
    // freed column only, and the result is certified for the rectangular problem.
    std::vector<char> free_col(static_cast<std::size_t>(m_), 0);
    for (idx i : loose) {
      free_col[x_[i]] = 1;
      y_[x_[i]] = -1;
      x_[i] = -1;
    }
    double top = *std::max_element(vd.begin(), vd.end());
    for (idx j = 0; j < m_; ++j) {
      if (y_[j] < 0 && !free_col[j] && vd[j] != top) return false;  // not a rectangular route
    }
    // Square problems start each path lazily (see cached_relax64()): d is reset where it was set.
    const bool lazy = n_ == m_ && !cache_ok_.empty();
    std::fill(d.begin(), d.end(), inf);
    std::vector<idx> touched;
    std::vector<std::pair<idx, double>> pending;  // rows relaxed from their cache only, and bases
    for (idx r : loose) {
      // Dijkstra over the columns, as augment() (settled columns masked by a price of -inf), in
      // float64; row i is entered at distance `dist` through its own column, whose reduced
      // cost it makes zero (u_i = S*c_ix - v_x).
      path.clear();
      ++t_stats.paths;
      touched.clear();
      pending.clear();
      bool dense = !lazy;
      // Relaxes row i at `base`: from its cache while the path is lazy, else a full row scan.
      auto relax_row = [&](idx i, double base) {
        if (!dense && cached_relax64(i, base, vd, d, pred, touched)) {
          pending.emplace_back(i, base);
          return ArgMin<double>{inf, -1};
        }
        dense_from_pending(dense, pending, vd, d, pred);
        ++t_stats.path_scans;
        return k().relax64(row(i), vd.data(), d.data(), pred.data(), m_, base, i);
      };
      // The next column to settle: while lazy, the closest touched column when no row's bound
      // for its other columns is closer; else the pending rows are scanned in full first.
      auto next = [&](ArgMin<double> am) {
        if (dense) return am;
        ArgMin<double> best{inf, -1};
        for (idx j : touched) {
          if (d[j] < best.val) best = ArgMin<double>{d[j], j};
        }
        double bound = inf;
        for (const auto& [i, base] : pending) bound = std::min(bound, base + cache_floor(i));
        if (best.arg >= 0 && best.val <= bound) return best;
        if (pending.empty()) return best;  // nothing left to reach
        return dense_from_pending(dense, pending, vd, d, pred);
      };
      ArgMin<double> am = next(relax_row(r, 0.0));
      double dist = 0;
      while (true) {
        if (am.arg < 0 || !(am.val < inf)) {
          for (const auto& st : path) vd[st.col] = st.price;
          return false;  // the caller re-solves in float64
        }
        const idx j = am.arg;
        dist = am.val;
        path.push_back({j, dist, vd[j]});
        if (free_col[j]) break;
        vd[j] = -inf;
        d[j] = inf;
        if (y_[j] >= 0) {
          const idx i = y_[j];
          const double ui = static_cast<double>(sc(i, j)) - path.back().price;
          am = next(relax_row(i, dist - ui));
          continue;
        }
        // A dummy-held column: every dummy-held column is at distance `dist` (equal prices, one
        // dummy row's reduced costs are top - v_k), so all settle now and one dummy scan does.
        am = ArgMin<double>{inf, -1};
        for (idx c = 0; c < m_; ++c) {
          if (y_[c] < 0 && !free_col[c] && vd[c] != -inf) {
            path.push_back({c, dist, vd[c]});
            vd[c] = -inf;
            d[c] = inf;
          }
        }
        for (idx c = 0; c < m_; ++c) {
          const double h = dist + (top - vd[c]);
          if (h < d[c]) {
            d[c] = h;
            pred[c] = -2 - j;  // reached from the dummy row holding column j
          }
          if (d[c] < am.val) am = ArgMin<double>{d[c], c};
        }
      }
      // Settled columns: prices fall by D - d_j (the sink keeps its own); the dummy-held ones
      // all by the same amount, which keeps them at a common highest price.
      for (const auto& st : path) vd[st.col] = st.price - (dist - st.dist);
      top = -inf;
      const idx sink = path.back().col;
      free_col[sink] = 0;
      for (idx j = sink;;) {  // flip the alternating path
        if (pred[j] < 0) {  // a dummy row moves from column -2 - pred[j] to j
          y_[j] = -1;
          top = vd[j];
          j = static_cast<idx>(-2 - pred[j]);
          continue;
        }
        const idx pi = static_cast<idx>(pred[j]), prev = x_[pi];
        y_[j] = pi;
        x_[pi] = j;
        if (pi == r) break;
        j = prev;
      }
      if (top == -inf && n_ < m_) {  // square problems have no dummy-held columns
        for (idx j = 0; j < m_; ++j) {
          if (y_[j] < 0 && !free_col[j]) top = vd[j];
        }
      }
      if (dense) {
        std::fill(d.begin(), d.end(), inf);
      } else {
        for (idx j : touched) d[j] = inf;
      }
    }
    if (n_ < m_) {
      // The rectangular certificate: every unassigned column at the highest price.
      const double hi = *std::max_element(vd.begin(), vd.end());
      for (idx j = 0; j < m_; ++j) {
        if (y_[j] < 0 && vd[j] != hi) return false;
      }
    }
    for (idx j = 0; j < m_; ++j) v_[j] = static_cast<T>(vd[j]);  // the duals reported
    for (idx i = 0; i < n_; ++i) {
      u_[i] = static_cast<T>(static_cast<double>(sc(i, x_[i])) - vd[x_[i]]);
    }
    return true;
  }

  // The repair's paths start lazily: a row is relaxed over its cached columns only, its other
  // columns standing behind one lower bound (cache_floor(), valid since prices only fall), and a
  // column is settled when no such bound is closer. A path of rows loose by a rounding usually
  // ends within the cached columns; a row is scanned in full only when its bound comes first
  // (then every pending row is, and the path goes on as augment()'s). Returns false, relaxing
  // nothing, when row i has no usable cache.
  bool cached_relax64(idx i, double base, const std::vector<double>& vd, std::vector<double>& d,
                      std::vector<std::int64_t>& pred, std::vector<idx>& touched) const {
    if (!cache_ok_[i] || !std::isfinite(cache_floor(i))) return false;
    const std::size_t at = static_cast<std::size_t>(i) * cache_stride();
    const std::size_t count = static_cast<std::size_t>(cache_ok_[i]) * k().lanes;
    for (std::size_t l = 0; l < count; ++l) {
      const idx j = cache_cols_[at + l];
      if (vd[j] == -std::numeric_limits<double>::infinity()) continue;  // settled
      const double h = base + (static_cast<double>(cache_vals_[at + l]) - vd[j]);
      if (h < d[j]) {
        if (d[j] == std::numeric_limits<double>::infinity()) touched.push_back(j);
        d[j] = h;
        pred[j] = i;
      }
    }
    return true;
  }

  // Scans the pending rows of a lazy path in full (the path is dense from then on); returns
  // the closest unsettled column.
  ArgMin<double> dense_from_pending(bool& dense, std::vector<std::pair<idx, double>>& pending,
                                    const std::vector<double>& vd, std::vector<double>& d,
                                    std::vector<std::int64_t>& pred) const {
    dense = true;
    ArgMin<double> am{std::numeric_limits<double>::infinity(), -1};
    for (const auto& [i, base] : pending) {
      ++t_stats.path_scans;
      am = k().relax64(row(i), vd.data(), d.data(), pred.data(), m_, base, i);
    }
    pending.clear();
    return am;
  }

  // A float64 lower bound on S*c_ij - v_j over the columns row i's cache leaves out (NaN or
  // infinite when unusable): the cached float32 bound less its rounding (see lb_from_cache()).
  double cache_floor(idx i) const {
    const double b = static_cast<double>(cache_bound_[i]);
    return b - std::fabs(b) * 0x1p-20 - 0x1p-140;
  }

  // lb_i = min_j (S*c_ij - v_j) in float64 for every row touched since reduce_square() (rows
  // untouched keep theirs: prices only decrease, so a bound only grows). Split over two threads
  // when large.
  void refresh_bounds(std::vector<double>& lb) const {
    detail::for_row_chunks(n_, kChunkRows, split_, [&](idx b, idx e, int) {
      for (idx i = b; i < e; ++i) {
        if (clean_.empty() || !clean_[i]) {
          const double lbc = lb_from_cache(i);
          lb[i] = std::isnan(lbc) ? k().lb64(row(i), v_.data(), m_) : lbc;
          if (std::isnan(lbc)) TT_LAP_PROFILE_COUNT(profile::Event::lb64_full, 1);
        }
      }
    });
  }

  // S*c_ix - v_x in float64: row i's reduced cost at its own column.
  double own64(idx i) const {
    return static_cast<double>(sc(i, x_[i])) - static_cast<double>(v_[x_[i]]);
  }

  // min_j (S*c_ij - v_j) in float64 from row i's cache, or NaN when the cache cannot prove it.
  // The cached columns are evaluated exactly (a difference of two floats is exact in double
  // unless their exponents are far apart, and then it is rounded like lb64's). Every other
  // column had a float32 value >= the cached bound b when the cache was filled, and prices only
  // decrease, so its exact value is >= b - 2^-23 |b| - 2^-149 (relative float32 rounding, or the
  // absolute one of subnormals); a wider margin below keeps that bound safe from the rounding of
  // this computation. When the best cached value is at or below it, it is the exact minimum.
  double lb_from_cache(idx i) const {
    if (cache_ok_.empty() || !cache_ok_[i]) return std::numeric_limits<double>::quiet_NaN();
    const double floor = cache_floor(i);
    if (!std::isfinite(floor)) return std::numeric_limits<double>::quiet_NaN();
    const std::size_t at = static_cast<std::size_t>(i) * cache_stride();
    const I* cols = &cache_cols_[at];
    const T* cv = &cache_vals_[at];
    const std::size_t count = static_cast<std::size_t>(cache_ok_[i]) * k().lanes;
    double best = std::numeric_limits<double>::infinity();
    for (std::size_t l = 0; l < count; ++l) {
      const double h = static_cast<double>(cv[l]) - static_cast<double>(v_[cols[l]]);
      best = h < best ? h : best;
    }
    return best <= floor ? best : std::numeric_limits<double>::quiet_NaN();
  }

  const std::vector<idx>& x() const { return x_; }
  const std::vector<T>& u() const { return u_; }
  const std::vector<T>& v() const { return v_; }

 private:
  // Another column with reduced cost `umin` for row i (ARR tie), preferring a free column.
  idx second_min_column(idx i, idx j1, T umin) const {
    const T* r = row(i);
    idx any = -1;
    for (idx j = 0; j < m_; ++j) {
      if (j == j1) continue;
      const T h = (S > 0 ? r[j] : -r[j]) - v_[j];
      if (h == umin) {
        if (y_[j] < 0) return j;
        if (any < 0) any = j;
      }
    }
    return any >= 0 ? any : j1;
  }

  void mark_dirty(idx i) {
    if (!clean_.empty()) clean_[i] = 0;
  }

  const Kernels<T>* kp_;
  const Kernels<T>& k() const { return *kp_; }
  const T* c_;
  const idx* rows_;  // row map (see the constructor), or null
  idx n_, m_, stride_;
  std::vector<T> u_, v_, d_;
  std::vector<I> pred_;
  std::vector<idx> x_, y_, free_, free_cols_;
  std::vector<Settled<T>> settled_;
  std::vector<char> clean_;
  std::vector<I> cache_cols_;
  std::vector<T> cache_vals_;  // S*c at the cached columns, contiguous per row
  std::vector<T> cache_bound_;
  std::vector<char> cache_ok_;
  bool use_free_cols_ = false;
  bool split_ = false;  // split the streaming passes over two threads (see kSplitMinEntries)
  std::vector<RowScan> scans_;
  double warm_gap_ = 0, warm_spread_ = 0;
  bool gave_up_ = false;           // a warm start's pass or budget said: restart cold
  bool collect_gaps_ = false;      // the row sample is being assigned: keep its gaps
  std::vector<double> sample_gaps_;  // the sampled rows' positive gaps (far_row_scans())
  std::vector<T> slack_;  // warm pass: each row's slack to hand to its column (transfer_slacks())
  std::int64_t scan_limit_ = -1;  // see limit_scans()
};

template <class T>
void write_out(const std::vector<idx>& x, const std::vector<T>& u, const std::vector<T>& v,
               const Solution<T>& out) {
  std::copy(x.begin(), x.end(), out.col_of_row);
  if (out.row_duals != nullptr) std::copy(u.begin(), u.end(), out.row_duals);
  if (out.col_duals != nullptr) std::copy(v.begin(), v.end(), out.col_duals);
}

// Augment every free row; with forbidden pairs also confirm that no +inf pair was used.
template <class T, int S>
Status finish(Solver<T, S>& s, idx n, bool forbidden) {
  const Status st = s.augment_free_rows();
  if (st != Status::ok) return st;
  if (forbidden) {
    const auto& x = s.x();
    for (idx i = 0; i < n; ++i) {
      if (!(s.sc(i, x[i]) < kInf<T>)) return Status::infeasible;
    }
  }
  return Status::ok;
}

// Minimise S*C over an (n, m) matrix with n <= m. A non-null `lb` (float32 only) requests the
// float64 check and holds its row bounds: exact (exact_or_repaired()) or tolerant (verified()).
template <class T, int S>
Status solve_min(const T* c, idx n, idx m, idx stride, const Solution<T>& out,
                 const WarmStart<T>& warm, std::vector<double>* lb, bool exact,
                 const idx* rows = nullptr);

// Re-solve a float32 problem in float64, warm-started from the float32 prices and assignment.
template <int S>
Status resolve_in_double(const float* c, idx n, idx m, idx stride, const Solver<float, S>* s32,
                         const Solution<float>& out, const idx* rows = nullptr) {
  std::vector<double> c64(static_cast<std::size_t>(n * m));
  for (idx i = 0; i < n; ++i) {
    const float* r = c + (rows != nullptr ? rows[i] : i) * stride;
    for (idx j = 0; j < m; ++j) c64[i * m + j] = static_cast<double>(r[j]);
  }
  std::vector<double> v64;
  std::vector<idx> x(static_cast<std::size_t>(n));
  std::vector<double> u(n), v(m);
  Solution<double> o64{x.data(), u.data(), v.data()};
  WarmStart<double> w;
  if (s32 != nullptr && n == m) {
    v64.assign(s32->v().begin(), s32->v().end());
    w = WarmStart<double>{v64.data(), s32->x().data()};
  }
  const Status st = solve_min<double, S>(c64.data(), n, m, m, o64, w, nullptr, true);
  if (st != Status::ok) return st;
  std::copy(x.begin(), x.end(), out.col_of_row);
  if (out.row_duals != nullptr) {
    for (idx i = 0; i < n; ++i) out.row_duals[i] = static_cast<float>(u[i]);
  }
  if (out.col_duals != nullptr) {
    for (idx j = 0; j < m; ++j) out.col_duals[j] = static_cast<float>(v[j]);
  }
  return Status::ok;
}

template <class T>
bool all_finite(const T* p, idx m) {
  for (idx j = 0; j < m; ++j) {
    if (!std::isfinite(p[j])) return false;
  }
  return true;
}

// Warm prices a solve can start from: finite and far from overflow, so that no reduced cost
// c - v of a finite cost overflows (a price of +-DBL_MAX made feasible problems "infeasible").
template <class T>
bool usable_prices(const T* v, idx m) {
  constexpr T kLimit = std::numeric_limits<T>::max() / 256;
  for (idx j = 0; j < m; ++j) {
    if (!(std::fabs(v[j]) <= kLimit)) return false;
  }
  return true;
}

// A warm start may change how fast a solve is, never its outcome; but the solver computes
// reduced costs c - v in T, so prices far larger than the costs round them away (warm prices
// (1e300, -1e300) on [[0, 1], [1, 0]] gave total 2 instead of 0). The duals of the result show
// it without reading the matrix: on assigned pairs u_i + v_j = c_ij, so the duals' magnitude
// against that of their sums measures the cancellation, typically 1-5x (uniform, correlation,
// after warm and cold solves). Beyond kWarmCancellation, or with non-finite duals, the warm
// result is not trusted and the problem is solved cold.
constexpr double kWarmCancellation = 65536.0;

template <class T>
bool duals_certify(const std::vector<idx>& x, const std::vector<T>& u, const std::vector<T>& v) {
  double magnitude = 0.0, net = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (x[i] < 0) continue;
    const double a = static_cast<double>(u[i]);
    const double b = static_cast<double>(v[static_cast<std::size_t>(x[i])]);
    if (!std::isfinite(a) || !std::isfinite(b)) return false;
    magnitude += std::fabs(a) + std::fabs(b);
    net += std::fabs(a + b);
  }
  return magnitude <= kWarmCancellation * net;
}

template <class T, int S>
Status solve_min(const T* c, idx n, idx m, idx stride, const Solution<T>& out,
                 const WarmStart<T>& warm, std::vector<double>* lb, bool exact, const idx* rows) {
  // The first split pass comes right after the set-up below: wake the helper now.
  const bool split = Solver<T, S>::splits(n, m);
  if (split) detail::prewake_helper();
  Solver<T, S> s(c, n, m, stride, rows);
  if (lb != nullptr) lb->assign(static_cast<std::size_t>(n), 0.0);
  const bool square = (n == m);
  bool forbidden = false;
  bool started = false;
  if (square && warm.col_duals != nullptr && usable_prices(warm.col_duals, m)) {
    // Warm start: one pass (validation folded in), then augment the rows left free.
    s.set_prices(warm.col_duals);
    EntryFlags f;
    bool ok;
    {
      TT_LAP_PROFILE_PHASE(warm_pass);
      // No transfer before an exact float32 check: it raises the tight rows' own reduced costs
      // above their caches' bounds, and the float64 repair then scans full rows (avx2,
      // n = 1024, 1 % noise: 0 -> 345 row scans, 15 % more instructions in all).
      const bool exact32 = exact && lb != nullptr;
      ok = s.greedy_from_prices(warm.col_of_row, &f, lb,
                                exact32 ? kSampleGapRatioExact32 : kSampleGapRatio, !exact32);
    }
    if (!ok) {
      return Status::invalid_entries;
    }
    forbidden = f.forbidden;
    started = true;
    if (!forbidden && n >= 2 &&
        (s.gave_up() || s.warm_gap() > kPassGapRatio * s.warm_spread())) {
      // The costs moved too far for these prices: a cold solve is cheaper than the long
      // augmenting paths ahead (the greedy pass, or its sample, is the only work lost).
      ++t_stats.cold_restarts;
      s.return_cache_buffers();
      s = Solver<T, S>(c, n, m, stride, rows);
      if (lb != nullptr) lb->assign(static_cast<std::size_t>(n), 0.0);
      started = false;
    } else if (!forbidden) {
      // The greedy pass left every row a cache, so ARR settles most conflicts cheaply.
      TT_LAP_PROFILE_PHASE(warm_arr);
      s.limit_scans(kWarmScanBudget * n);
      s.augmenting_row_reduction(4);
    }
  }
  if (!started) {
    EntryFlags f;
    {
      TT_LAP_PROFILE_PHASE(colmin);
      f = s.column_minima();
    }
    if (f.invalid) return Status::invalid_entries;
    forbidden = f.forbidden;
    if (square && !forbidden && n >= 2) {
      if (lb != nullptr) s.track_cleanliness();
      {
        TT_LAP_PROFILE_PHASE(reduce);
        s.reduce_square(lb);
      }
      TT_LAP_PROFILE_PHASE(cold_arr);
      s.augmenting_row_reduction(4);
    } else if (square && forbidden) {
      // Column minima are feasible prices; an all-forbidden column means no perfect matching.
      if (!all_finite(s.v().data(), m)) return Status::infeasible;
      std::vector<T> v0(s.v());
      s.set_prices(v0.data());
      EntryFlags g;
      s.greedy_from_prices(nullptr, &g, lb);
    } else {
      std::vector<T> zero(static_cast<std::size_t>(m), T(0));
      s.set_prices(zero.data());
      s.init_all_free();
      if (!forbidden && m >= 2) {
        // ARR keeps what the rectangular route needs: prices only decrease, a column once taken
        // stays taken, so every free column keeps the highest price (0), and every assigned row
        // stays tight. It settles most rows for far less than their shortest paths.
        s.enable_row_caches();
        s.augmenting_row_reduction(4, 32);
      }
    }
  }
  // The float32 check (split) follows the shortest paths, which are short after the reductions.
  if (split && lb != nullptr) detail::prewake_helper();
  Status st;
  {
    TT_LAP_PROFILE_PHASE(augment);
    st = finish(s, n, forbidden);
  }
  if (started && s.gave_up()) {
    // The warm start ran out of its scan budget: its prices cost more than a cold start.
    ++t_stats.cold_restarts;
    s.return_cache_buffers();
    return solve_min<T, S>(c, n, m, stride, out, WarmStart<T>{}, lb, exact, rows);
  }
  const bool untrusted =
      st == Status::infeasible || (st == Status::ok && !duals_certify(s.x(), s.u(), s.v()));
  if (started && untrusted) {
    // Not trusted from warm prices (see duals_certify()): solve cold, which also confirms an
    // "infeasible" found from them.
    s.return_cache_buffers();
    return solve_min<T, S>(c, n, m, stride, out, WarmStart<T>{}, lb, exact, rows);
  }
  if constexpr (std::is_same_v<T, float>) {
    // A float32 "infeasible" may be an overflow of reduced costs near FLT_MAX: confirm in float64.
    if (st == Status::infeasible && lb != nullptr) {
      return resolve_in_double<S>(c, n, m, stride, nullptr, out, rows);
    }
    bool good = true;
    if (st == Status::ok && lb != nullptr) {
      TT_LAP_PROFILE_PHASE(verify);
      good = exact ? s.exact_or_repaired(*lb) : s.verified(*lb);
    }
    if (!good) {
      TT_LAP_PROFILE_PHASE(resolve64);
      return resolve_in_double<S>(c, n, m, stride, &s, out, rows);
    }
  }
  if (st != Status::ok) return st;
  write_out(s.x(), s.u(), s.v(), out);
  return Status::ok;
}

template <class T>
Status dispatch_sign(const T* c, idx n, idx m, idx stride, bool maximize, const Solution<T>& out,
                     const WarmStart<T>& warm, bool exact, const idx* rows = nullptr) {
  if constexpr (std::is_same_v<T, float>) {
    // The float32 kernels carry column indices in int32 lanes.
    if (m >= (idx{1} << 30)) {
      return maximize ? resolve_in_double<-1>(c, n, m, stride, nullptr, out, rows)
                      : resolve_in_double<+1>(c, n, m, stride, nullptr, out, rows);
    }
  }
  std::vector<double> lb;
  std::vector<double>* lbp = std::is_same_v<T, float> ? &lb : nullptr;
  return maximize ? solve_min<T, -1>(c, n, m, stride, out, warm, lbp, exact, rows)
                  : solve_min<T, +1>(c, n, m, stride, out, warm, lbp, exact, rows);
}

// max_j |r[j]| (NaN entries are caught by the solve itself). W independent lanes so that the
// compiler vectorises it (the scalar loop was ~6 % of a cold solve of a digits gradient cost).
template <class T>
T max_abs(const T* r, idx m) {
  constexpr int W = 16;
  T acc[W] = {};
  idx j = 0;
  for (; j + W <= m; j += W) {
    for (int l = 0; l < W; ++l) {
      const T a = std::fabs(r[j + l]);
      acc[l] = a > acc[l] ? a : acc[l];
    }
  }
  T best = T(0);
  for (; j < m; ++j) {
    const T a = std::fabs(r[j]);
    best = a > best ? a : best;
  }
  for (int l = 0; l < W; ++l) best = acc[l] > best ? acc[l] : best;
  return best;
}

// Rows whose entries are all equal and finite (e.g. the all-zero rows of dead ReLU units in
// gradient cost matrices), or an empty list when there are too few to be worth removing.
template <class T>
std::vector<idx> constant_rows(const T* c, idx n, idx m, idx stride) {
  std::vector<idx> rows;
  for (idx i = 0; i < n; ++i) {
    const T* r = c + i * stride;
    const T a = r[0];
    if (!std::isfinite(a)) continue;
    idx j = 1;
    while (j < m && r[j] == a) ++j;
    if (j == m) rows.push_back(i);
  }
  // Dead units make such rows (setting them aside pays on gradient costs). A single such row in
  // a large matrix is not worth the copy, nor are tiny problems.
  if (n < 16 || static_cast<idx>(rows.size()) * 64 < n) rows.clear();
  return rows;
}

// The same for columns (all entries of the column equal and finite).
template <class T>
std::vector<idx> constant_cols(const T* c, idx n, idx m, idx stride) {
  // The candidates (columns still equal to row 0 in every row so far) shrink to the constant
  // columns within a row or two, so later rows only read those: with constant columns present a
  // pass over every column of every row was ~4 % of a cold solve of a digits gradient cost.
  std::vector<idx> cols;
  for (idx j = 0; j < m; ++j) {
    if (std::isfinite(c[j])) cols.push_back(j);
  }
  for (idx i = 1; i < n && !cols.empty(); ++i) {
    const T* r = c + i * stride;
    std::size_t kept = 0;
    for (const idx j : cols) {
      if (r[j] == c[j]) cols[kept++] = j;
    }
    cols.resize(kept);
  }
  if (m < 16 || static_cast<idx>(cols.size()) * 64 < m) cols.clear();
  return cols;
}

// A constant row adds the same cost whichever column it takes, so an optimum of the other rows
// (an (n - r, m) problem, r the constant rows) completed by giving the constant rows the columns
// left over is an optimum of the whole problem (exact). The reduced problem has fewer rows than
// columns, so it takes the rectangular route (zero prices, ARR, shortest paths), which on
// low-rank costs does far less work than the square one with the constant rows in it.
// Duals: the rectangular solve leaves every unassigned column at the highest price (its start
// price, prices only decrease), so u = S*a - max v is tight on any leftover column and feasible.
//
// `transposed`: solve the transpose of the (m, n) matrix at `cost` instead (row i of the problem
// is column i of the matrix), read in blocks without a transposed copy of the whole matrix.
template <class T>
Status solve_without_constant_rows(const T* cost, idx n, idx m, idx stride, bool maximize,
                                   const Solution<T>& out, const std::vector<idx>& rows,
                                   bool exact, bool transposed = false) {
  const idx r = static_cast<idx>(rows.size());
  const idx n2 = n - r;
  std::vector<idx> keep;
  keep.reserve(static_cast<std::size_t>(n2));
  for (idx i = 0, t = 0; i < n; ++i) {
    if (t < r && rows[static_cast<std::size_t>(t)] == i) {
      ++t;
      continue;
    }
    keep.push_back(i);
  }
  // Row order does not change the optimum, only the work: rows with the largest entries first
  // settle the contested columns early, and later shortest paths get shorter.
  std::vector<T> score(static_cast<std::size_t>(n), T(0));
  if (!transposed) {
    for (idx i = 0; i < n; ++i) score[static_cast<std::size_t>(i)] = max_abs(cost + i * stride, m);
  } else {
    for (idx i = 0; i < m; ++i) {
      const T* row_i = cost + i * stride;
      for (idx j = 0; j < n; ++j) {
        const T a = std::fabs(row_i[j]);
        T& sc = score[static_cast<std::size_t>(j)];
        sc = a > sc ? a : sc;  // NaN entries are caught by the solve itself
      }
    }
  }
  std::stable_sort(keep.begin(), keep.end(), [&score](idx a, idx b) {
    return score[static_cast<std::size_t>(a)] > score[static_cast<std::size_t>(b)];
  });
  // Not transposed: the solver reads the kept rows in place through `keep` instead of a copy
  // (which would be allocated, zero-filled and written on every solve).
  std::vector<T> sub(static_cast<std::size_t>(transposed ? n2 * m : 0));
  if (transposed) {
    constexpr idx B = 32;  // blocked gather: column-wise reads of a whole matrix thrash the cache
    for (idx t0 = 0; t0 < n2; t0 += B) {
      for (idx j0 = 0; j0 < m; j0 += B) {
        for (idx j = j0; j < std::min(j0 + B, m); ++j) {
          const T* src = cost + j * stride;
          for (idx t = t0; t < std::min(t0 + B, n2); ++t) {
            sub[static_cast<std::size_t>(t * m + j)] = src[keep[static_cast<std::size_t>(t)]];
          }
        }
      }
    }
  }
  std::vector<idx> x2(static_cast<std::size_t>(n2));
  std::vector<T> u2(static_cast<std::size_t>(n2)), v(static_cast<std::size_t>(m));
  if (n2 > 0) {
    const Solution<T> o2{x2.data(), u2.data(), v.data()};
    const Status st = transposed
                          ? dispatch_sign<T>(sub.data(), n2, m, m, maximize, o2, WarmStart<T>{},
                                             exact)
                          : dispatch_sign<T>(cost, n2, m, stride, maximize, o2, WarmStart<T>{},
                                             exact, keep.data());
    if (st != Status::ok) return st;
  }
  std::vector<char> used(static_cast<std::size_t>(m), 0);
  for (idx t = 0; t < n2; ++t) {
    out.col_of_row[keep[t]] = x2[t];
    used[static_cast<std::size_t>(x2[t])] = 1;
    if (out.row_duals != nullptr) out.row_duals[keep[t]] = u2[t];
  }
  T vmax = -kInf<T>;
  for (idx j = 0; j < m; ++j) vmax = v[j] > vmax ? v[j] : vmax;
  if (n2 == 0) vmax = T(0);
  idx j = 0;
  for (idx i : rows) {
    while (used[static_cast<std::size_t>(j)]) ++j;
    used[static_cast<std::size_t>(j)] = 1;
    out.col_of_row[i] = j;
    const T a = transposed ? cost[i] : cost[i * stride];
    if (out.row_duals != nullptr) out.row_duals[i] = (maximize ? -a : a) - vmax;
  }
  if (out.col_duals != nullptr) std::copy(v.begin(), v.end(), out.col_duals);
  return Status::ok;
}

}  // namespace

template <class T>
Status solve(const T* cost, idx n, idx m, idx row_stride, bool maximize, const Solution<T>& out,
             const WarmStart<T>& warm, bool exact) {
  t_stats = SolveStats{};
  if (n == 0 || m == 0) return Status::ok;
  if (n <= m && !(n == m && warm.col_duals != nullptr)) {
    // Cold solves only: a warm square solve keeps its (cheaper) warm route.
    const std::vector<idx> rows = constant_rows(cost, n, m, row_stride);
    if (n == m) {
      // A square problem is the same problem transposed (the assignment inverted, the duals
      // swapped): drop whichever of rows or columns has more constant ones (fewer rows left).
      const std::vector<idx> cols = constant_cols(cost, n, m, row_stride);
      if (cols.size() > rows.size()) {
        std::vector<idx> row_of_col(static_cast<std::size_t>(n));
        const Status st = solve_without_constant_rows(
            cost, n, n, row_stride, maximize,
            Solution<T>{row_of_col.data(), out.col_duals, out.row_duals}, cols, exact, true);
        if (st != Status::ok) return st;
        for (idx j = 0; j < n; ++j) out.col_of_row[row_of_col[static_cast<std::size_t>(j)]] = j;
        return Status::ok;
      }
    }
    if (!rows.empty()) {
      return solve_without_constant_rows(cost, n, m, row_stride, maximize, out, rows, exact);
    }
  }
  if (n <= m) return dispatch_sign<T>(cost, n, m, row_stride, maximize, out, warm, exact);
  // Tall problem: solve the transpose (columns become rows); its row duals are our column duals.
  std::vector<T> buf(static_cast<std::size_t>(n * m));
  for (idx i = 0; i < n; ++i) {
    const T* r = cost + i * row_stride;
    for (idx j = 0; j < m; ++j) buf[j * n + i] = r[j];
  }
  Solution<T> inner = out;
  std::swap(inner.row_duals, inner.col_duals);
  return dispatch_sign<T>(buf.data(), m, n, n, maximize, inner, WarmStart<T>{}, exact);
}

const char* simd_level() { return detail::kernels<double, 1>().isa; }

SolveStats last_solve_stats() { return t_stats; }

InterruptPoll set_interrupt_poll(InterruptPoll poll) {
  const InterruptPoll previous = t_poll;
  t_poll = poll;
  t_next_poll = std::chrono::steady_clock::now() + std::chrono::milliseconds(kInterruptPollMs);
  return previous;
}

bool interrupt_requested() {
  if (t_poll == nullptr) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now < t_next_poll) return false;
  t_next_poll = now + std::chrono::milliseconds(kInterruptPollMs);
  return t_poll();
}

template Status solve<float>(const float*, idx, idx, idx, bool, const Solution<float>&,
                             const WarmStart<float>&, bool);
template Status solve<double>(const double*, idx, idx, idx, bool, const Solution<double>&,
                              const WarmStart<double>&, bool);

}  // namespace trajtransfer::lap

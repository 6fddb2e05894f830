// Row kernels of the dense LAP solver (internal header, included by lap_dense.cpp only).
//
// Every hot loop of the solver is one contiguous pass over a cost row together with the column
// arrays (prices v, distances d, predecessors). They are written once with GCC/Clang vector
// extensions and compiled for several instruction sets (AVX-512, AVX2, SSE2) through target
// attributes; the widest one the CPU supports is picked at run time. Release builds therefore
// stay portable (no -march=native) while using 512-bit vectors where they exist.
//
// S = +1 minimises, S = -1 maximises: the sign is folded into the loads instead of negating a
// copy of the matrix. Multiplying by +-1 is exact, so both directions round identically.
#pragma once

// The vector types only live inside always-inline bodies compiled for their own target; the
// ABI note GCC prints for them does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

namespace trajtransfer::lap::detail {

using idx = std::int64_t;

template <class T>
constexpr T kInf = std::numeric_limits<T>::infinity();

/// Predecessor index type: same width as T so that comparison masks blend it lane for lane.
template <class T>
using pidx = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;

template <class T>
struct ArgMin {
  T val;
  idx arg;  // -1 when every candidate is +inf
};

template <class T>
struct Min2 {
  T m1;    // smallest value
  idx i1;  // one index where it is attained
  T m2;    // second smallest value of the multiset (== m1 on a tie)

  /// Fold in value h at index j (the first index keeps a tie for m1).
  void push(T h, idx j) {
    if (h < m1) {
      m2 = m1;
      m1 = h;
      i1 = j;
    } else if (h < m2) {
      m2 = h;
    }
  }
};

struct EntryFlags {
  bool invalid = false;    // NaN or -inf after the sign flip
  bool forbidden = false;  // +inf after the sign flip
};

#define TT_ALWAYS_INLINE [[gnu::always_inline]] inline

template <class T, int W>
struct Vec {
  using I = pidx<T>;
  typedef T v __attribute__((vector_size(W * sizeof(T))));
  typedef I iv __attribute__((vector_size(W * sizeof(T))));
  TT_ALWAYS_INLINE static v load(const T* p) {
    v x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  }
  TT_ALWAYS_INLINE static iv loadi(const I* p) {
    iv x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  }
  TT_ALWAYS_INLINE static void store(T* p, v x) { std::memcpy(p, &x, sizeof(x)); }
  TT_ALWAYS_INLINE static void storei(I* p, iv x) { std::memcpy(p, &x, sizeof(x)); }
  TT_ALWAYS_INLINE static v splat(T s) { return v{} + s; }
  TT_ALWAYS_INLINE static iv isplat(I s) { return iv{} + s; }
  TT_ALWAYS_INLINE static iv iota() {
    iv x{};
    for (int l = 0; l < W; ++l) x[l] = static_cast<I>(l);
    return x;
  }
};

// W lanes of U (for the float -> double conversion of the verification kernel).
template <class U, int W>
struct Wide {
  typedef U v __attribute__((vector_size(W * sizeof(U))));
};

template <int S, class X>
TT_ALWAYS_INLINE X signed_load(X x) {
  if constexpr (S > 0) {
    return x;
  } else {
    return -x;
  }
}

// Software prefetch of a row stream: the cache lines `kPrefetchBytes` ahead of the `Bytes` a
// loop iteration reads (one line at least). Every row kernel below streams a row from L3 or
// memory, and the hardware prefetchers of the machine measured (a virtualised AVX-512 Xeon)
// held a one-thread row scan at ~20 GB/s; 2 KiB ahead, every line, was the best distance tried.
constexpr int kPrefetchBytes = 2048;
template <std::size_t Bytes>
TT_ALWAYS_INLINE void prefetch_ahead(const void* p) {
  // The address may lie past the row's end (prefetches never fault): formed as an integer, since
  // pointer arithmetic beyond an array is undefined.
  const std::uintptr_t c = reinterpret_cast<std::uintptr_t>(p) + kPrefetchBytes;
  for (std::size_t o = 0; o < Bytes || o == 0; o += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(c + o));
  }
}

// Validation folded into the column-minimum pass: v[j] = min(v[j], S*r[j]) with its argmin row.
template <class T, int S, int W>
TT_ALWAYS_INLINE EntryFlags colmin_body(const T* r, T* v, pidx<T>* arg, idx m, pidx<T> row) {
  using V = Vec<T, W>;
  using I = pidx<T>;
  typename V::iv bad{}, inf{};
  const typename V::v ninf = V::splat(-kInf<T>), pinf = V::splat(kInf<T>);
  const typename V::iv rowv = V::isplat(row);
  idx j = 0;
  for (; j + W <= m; j += W) {
    prefetch_ahead<W * sizeof(T)>(r + j);
    const typename V::v x = signed_load<S>(V::load(r + j));
    bad |= ~(x > ninf);  // NaN or -inf
    inf |= (x == pinf);
    const typename V::v cur = V::load(v + j);
    const typename V::iv lt = x < cur;
    V::store(v + j, lt ? x : cur);
    V::storei(arg + j, lt ? rowv : V::loadi(arg + j));
  }
  EntryFlags f;
  for (int l = 0; l < W; ++l) {
    f.invalid |= bad[l] != 0;
    f.forbidden |= inf[l] != 0;
  }
  for (; j < m; ++j) {
    const T x = signed_load<S>(r[j]);
    f.invalid |= !(x > -kInf<T>);
    f.forbidden |= (x == kInf<T>);
    if (x < v[j]) {
      v[j] = x;
      arg[j] = static_cast<I>(row);
    }
  }
  return f;
}

// Lane-wise minimum over all W lanes, broadcast to every lane: a butterfly of lane swaps
// (log2 W shuffles + minima), the partner of lane l at step Sh being lane l ^ Sh. M is the
// integer vector type of X's width (the shuffle mask type of GCC < 12, which lacks
// __builtin_shufflevector).
template <class X, class M, int Sh, std::size_t... L>
TT_ALWAYS_INLINE X lanes_min(X x, std::index_sequence<L...> seq) {
  if constexpr (Sh >= 1) {
#if defined(__clang__) || __GNUC__ >= 12
    const X o = __builtin_shufflevector(x, x, (L ^ Sh)...);
#else
    const X o = __builtin_shuffle(x, M{static_cast<decltype(M{}[0])>(L ^ Sh)...});
#endif
    x = o < x ? o : x;
    return lanes_min<X, M, Sh / 2>(x, seq);
  } else {
    return x;
  }
}

// Smallest and second smallest of h_j = S*r[j] - v[j] (augmenting row reduction, transfer).
//
// With `cache_cols`/`cache_vals`/`cache_bound` (Depth >= 1) it also leaves a certificate for a
// later, cheap re-evaluation of the same row: the Depth smallest columns of every lane (W per-lane
// argmins, then, for Depth 2, the W per-lane second argmins), their signed costs S*r[j] (so that a
// re-evaluation reads one contiguous block instead of scattered cache lines of the row) and a
// lower bound on h over every other column (the smallest per-lane (Depth+1)-th minimum and the
// scalar tail). Prices only decrease after a warm or cold start, so h only grows and the bound
// stays valid (see Solver::row_min2).
//
// Depth 1 fills the caches in the streaming passes; Depth 2 refills, on long rows, the cache of a
// row whose re-examination the cache could not prove (ARR evicts the same rows again and again:
// at depth 1 the cached pair outgrew the bound on 11 % (float32) to 22 % (float64) of the
// re-examinations of a warm n = 1024 re-solve, each a full row scan; at depth 2 everywhere, on
// under 1 %). Depth 2 in the passes themselves made them 50-60 % slower (three minima per lane
// instead of two), so only refills use it (Solver::deep_refill() says where it pays).
template <class T, int S, int W, bool Check = false, int Depth = 0>
TT_ALWAYS_INLINE Min2<T> min2_body(const T* r, const T* v, idx m, EntryFlags* flags = nullptr,
                                   pidx<T>* cache_cols = nullptr, T* cache_vals = nullptr,
                                   T* cache_bound = nullptr) {
  using V = Vec<T, W>;
  using I = pidx<T>;
  typename V::v m1 = V::splat(kInf<T>), m2 = V::splat(kInf<T>), c1 = V::splat(kInf<T>);
  typename V::v m3 = V::splat(kInf<T>), c2 = V::splat(kInf<T>);  // Depth 2 only
  // A lane starts on its own first column: a lane that never improves on +inf then caches a
  // column of its own (with its real cost), never a duplicate of another lane's.
  typename V::iv jv = V::iota(), i1 = jv, i2 = jv;
  const typename V::iv step = V::isplat(static_cast<I>(W));
  typename V::iv bad{}, inf{};
  const typename V::v ninf = V::splat(-kInf<T>), pinf = V::splat(kInf<T>);
  idx j = 0;
  for (; j + W <= m; j += W) {
    prefetch_ahead<W * sizeof(T)>(r + j);
    const typename V::v x = signed_load<S>(V::load(r + j));
    if constexpr (Check) {
      bad |= ~(x > ninf);
      inf |= (x == pinf);
    }
    const typename V::v h = x - V::load(v + j);
    const typename V::iv lt = h < m1;
    const typename V::v hi = lt ? m1 : h;  // the larger of (h, m1)
    if constexpr (Depth == 2) {
      // Per lane: (m1, m2, m3) the three smallest, (i1, c1) and (i2, c2) the first two's columns.
      const typename V::iv lt2 = h < m2;
      m3 = lt2 ? m2 : (h < m3 ? h : m3);
      i2 = lt2 ? (lt ? i1 : jv) : i2;
      c2 = lt2 ? (lt ? c1 : x) : c2;
    }
    if constexpr (Depth >= 1) c1 = lt ? x : c1;
    m2 = hi < m2 ? hi : m2;
    m1 = lt ? h : m1;
    i1 = lt ? jv : i1;
    jv += step;
  }
  Min2<T> out{kInf<T>, -1, kInf<T>};
  T bound = kInf<T>;
  if (j > 0) {
    // The lanes' answer without branches (shuffle trees, see lanes_min()): the smallest m1, from
    // the first lane holding it; the second smallest is the smallest of the other lanes' m1 and
    // of every lane's m2. Same result as pushing the lanes in order through branches, which
    // mispredict.
    const auto seq = std::make_index_sequence<W>{};
    const typename V::v a = lanes_min<typename V::v, typename V::iv, W / 2>(m1, seq);
    bound = lanes_min<typename V::v, typename V::iv, W / 2>(Depth == 2 ? m3 : m2, seq)[0];
    if (a[0] < kInf<T>) {
      const typename V::iv lane = V::iota();
      const typename V::iv none = V::isplat(static_cast<I>(W));
      const typename V::iv first =
          lanes_min<typename V::iv, typename V::iv, W / 2>((m1 == a) ? lane : none, seq);
      const typename V::v rest = (lane == first) ? pinf : m1;
      out.m1 = a[0];
      out.i1 = static_cast<idx>(i1[first[0]]);
      out.m2 = lanes_min<typename V::v, typename V::iv, W / 2>(rest < m2 ? rest : m2, seq)[0];
    } else {
      out.m2 = lanes_min<typename V::v, typename V::iv, W / 2>(m2, seq)[0];
    }
    if constexpr (Depth >= 1) {
      // A lane that never improved on +inf keeps its start column with its real cost; a lane
      // without a finite second keeps that column again at +inf (never below m2).
      for (int l = 0; l < W; ++l) {
        if (!(m1[l] < kInf<T>)) c1[l] = signed_load<S>(r[i1[l]]);
        if (Depth == 2 && !(m2[l] < kInf<T>)) {
          i2[l] = i1[l];
          c2[l] = kInf<T>;
        }
      }
      V::storei(cache_cols, i1);
      V::store(cache_vals, c1);
      if constexpr (Depth == 2) {
        V::storei(cache_cols + W, i2);
        V::store(cache_vals + W, c2);
      }
    }
  }
  for (; j < m; ++j) {
    const T x = signed_load<S>(r[j]);
    if constexpr (Check) {
      flags->invalid |= !(x > -kInf<T>);
      flags->forbidden |= (x == kInf<T>);
    }
    const T h = x - v[j];
    if (h < bound) bound = h;
    out.push(h, j);
  }
  if constexpr (Depth >= 1) *cache_bound = bound;
  if constexpr (Check) {
    for (int l = 0; l < W; ++l) {
      flags->invalid |= bad[l] != 0;
      flags->forbidden |= inf[l] != 0;
    }
  }
  if (out.i1 < 0 && m > 0) out.i1 = 0;  // every entry +inf: any column is "the" minimum
  return out;
}

// min2_body<T, S, W, true, 1> over two independent lane sets, for even and odd vectors (m >= 2W):
// half the dependency chain per column (each set's running minimum is a compare-and-blend chain),
// and a certificate twice as wide for the same pass: 2W columns (each set's per-lane argmin),
// with the smallest of the 2W per-lane second minima as the bound. That is as wide as a depth-2
// refill (the cache's room), which the warm pass could not afford at depth 2 (see above).
// Ties for the minimum go to the smallest column. Validation: x * 0 is 0 for a finite x and NaN
// for +-inf or NaN, so a running sum of (xa + xb) * 0 flags a row holding any of them (or two
// finite entries whose sum overflows), and only such rows (rare) are classified by a scalar
// rescan; two comparisons per vector cost more here, and GCC scalarised them in this loop.
template <class T, int S, int W>
TT_ALWAYS_INLINE Min2<T> min2_wide_body(const T* r, const T* v, idx m, EntryFlags* flags,
                                        pidx<T>* cache_cols, T* cache_vals, T* cache_bound) {
  using V = Vec<T, W>;
  using I = pidx<T>;
  const typename V::v pinf = V::splat(kInf<T>), zero = V::splat(T(0));
  typename V::v m1a = pinf, m2a = pinf, c1a = pinf, m1b = pinf, m2b = pinf, c1b = pinf;
  typename V::v nfa = zero;
  const typename V::iv step2 = V::isplat(static_cast<I>(2 * W));
  // Set b's columns are kept W below their index (ja, not ja + W: one vector add less per
  // step) and shifted after the loop.
  typename V::iv ja = V::iota();
  typename V::iv i1a = ja, i1b = ja;  // each lane starts on its own column: distinct entries
  idx j = 0;
  for (; j + 2 * W <= m; j += 2 * W) {
    typename V::v xa = signed_load<S>(V::load(r + j));
    typename V::v xb = signed_load<S>(V::load(r + j + W));
#if defined(__x86_64__) || defined(__i386__)
    // Keep the loaded vectors in registers: GCC otherwise re-reads each one from memory for the
    // sum and for the cached-cost blend (three loads per vector instead of one), which costs 8 %
    // of a warm float64 n = 1024 re-solve once the rows are prefetched. ("v" is
    // an x86 register class; other targets keep the compiler's choice.)
    __asm__("" : "+v"(xa), "+v"(xb));
#endif
    prefetch_ahead<2 * W * sizeof(T)>(r + j);
    nfa += (xa + xb) * zero;  // NaN when either holds a non-finite entry (or the sum overflows)
    const typename V::v ha = xa - V::load(v + j), hb = xb - V::load(v + j + W);
    const typename V::iv lta = ha < m1a, ltb = hb < m1b;
    const typename V::v hia = lta ? m1a : ha, hib = ltb ? m1b : hb;
    c1a = lta ? xa : c1a;
    c1b = ltb ? xb : c1b;
    m2a = hia < m2a ? hia : m2a;
    m2b = hib < m2b ? hib : m2b;
    m1a = lta ? ha : m1a;
    m1b = ltb ? hb : m1b;
    i1a = lta ? ja : i1a;
    i1b = ltb ? ja : i1b;
    ja += step2;
  }
  const idx vec_end = j;
  i1b += V::isplat(static_cast<I>(W));
  // An odd vector at the end goes to set a. (The set step is written out, here and in the loop:
  // through a shared inline helper GCC ordered the two sets' chains one after the other, and
  // the warm float64 n = 1024 re-solve took 5 % longer.)
  if (j + W <= m) {
    const typename V::v xa = signed_load<S>(V::load(r + j));
    nfa += xa * zero;
    const typename V::v ha = xa - V::load(v + j);
    const typename V::iv lta = ha < m1a;
    const typename V::v hia = lta ? m1a : ha;
    c1a = lta ? xa : c1a;
    m2a = hia < m2a ? hia : m2a;
    m1a = lta ? ha : m1a;
    i1a = lta ? ja : i1a;
    j += W;
  }
  const auto seq = std::make_index_sequence<W>{};
  const typename V::v lo = m1a < m1b ? m1a : m1b;
  const typename V::v a1 = lanes_min<typename V::v, typename V::iv, W / 2>(lo, seq);
  const typename V::v m2s = m2a < m2b ? m2a : m2b;
  const typename V::v bnd = lanes_min<typename V::v, typename V::iv, W / 2>(m2s, seq);
  Min2<T> out{kInf<T>, -1, bnd[0]};
  if (a1[0] < kInf<T>) {
    const typename V::iv none = V::isplat(std::numeric_limits<I>::max());
    const typename V::iv ca = (m1a == a1) ? i1a : none, cb = (m1b == a1) ? i1b : none;
    const typename V::iv col =
        lanes_min<typename V::iv, typename V::iv, W / 2>(ca < cb ? ca : cb, seq);
    const typename V::v ra = (i1a == col) ? pinf : m1a, rb = (i1b == col) ? pinf : m1b;
    const typename V::v rest = ra < rb ? ra : rb;
    out.m1 = a1[0];
    out.i1 = static_cast<idx>(col[0]);
    out.m2 = lanes_min<typename V::v, typename V::iv, W / 2>(rest < m2s ? rest : m2s, seq)[0];
  }
  // Rare rows, found with one reduction: a lane that never improved on +inf (it caches its
  // start column with its real cost) or a non-finite entry (NaN sum: classified below).
  const typename V::v nf = nfa;
  const typename V::iv rare = ~(m1a < pinf) | ~(m1b < pinf) | (nf != nf);
  const bool any_rare = lanes_min<typename V::iv, typename V::iv, W / 2>(rare, seq)[0] != 0;
  if (any_rare) {
    for (int l = 0; l < W; ++l) {
      if (!(m1a[l] < kInf<T>)) c1a[l] = signed_load<S>(r[i1a[l]]);
      if (!(m1b[l] < kInf<T>)) c1b[l] = signed_load<S>(r[i1b[l]]);
    }
  }
  V::storei(cache_cols, i1a);
  V::store(cache_vals, c1a);
  V::storei(cache_cols + W, i1b);
  V::store(cache_vals + W, c1b);
  T bound = bnd[0];
  for (; j < m; ++j) {
    const T x = signed_load<S>(r[j]);
    flags->invalid |= !(x > -kInf<T>);
    flags->forbidden |= (x == kInf<T>);
    const T h = x - v[j];
    if (h < bound) bound = h;
    out.push(h, j);
  }
  *cache_bound = bound;
  for (idx q = 0; any_rare && q < vec_end + W && q < m; ++q) {
    const T x = signed_load<S>(r[q]);
    flags->invalid |= !(x > -kInf<T>);
    flags->forbidden |= (x == kInf<T>);
  }
  if (out.i1 < 0) out.i1 = 0;  // every entry +inf: any column is "the" minimum
  return out;
}

// Smallest value over the W lanes and, among the lanes holding it, the smallest index; {+inf, -1}
// when every lane is +inf. Two shuffle trees instead of a scalar loop over the lanes with
// branches, which was about a third of a 512-column relax pass.
// Tried and dropped: two running argmins per pass (the loop is not latency-bound; no gain).
template <class T, int W>
TT_ALWAYS_INLINE ArgMin<T> lane_argmin(typename Vec<T, W>::v best, typename Vec<T, W>::iv besti) {
  using V = Vec<T, W>;
  using I = pidx<T>;
  const auto seq = std::make_index_sequence<W>{};
  const typename V::v bmin = lanes_min<typename V::v, typename V::iv, W / 2>(best, seq);
  ArgMin<T> out{kInf<T>, -1};
  if (!(bmin[0] < kInf<T>)) return out;
  const typename V::iv cand =
      (best == bmin) ? besti : V::isplat(std::numeric_limits<I>::max());
  out.val = bmin[0];
  out.arg = static_cast<idx>(lanes_min<typename V::iv, typename V::iv, W / 2>(cand, seq)[0]);
  return out;
}

// One Dijkstra step from row `row` at offset `base` (= path length so far minus u_row):
// relax d[j] with (S*r[j] - v[j]) + base, remember the predecessor, and return the argmin of the
// updated d. Columns already settled carry v = -inf and d = +inf, so they are never relaxed nor
// chosen: the pass needs no index list and no mask array. First = true overwrites d and pred,
// which removes the per-path O(m) re-initialisation.
// R: the row's element type, converted exactly to T (float32 rows in the float64 repair of
// float32 solves, Solver::exact_or_repaired()).
template <class T, int S, int W, bool First, class R = T>
TT_ALWAYS_INLINE ArgMin<T> relax_body(const R* r, const T* v, T* d, pidx<T>* pred, idx m, T base,
                                      pidx<T> row) {
  using V = Vec<T, W>;
  using I = pidx<T>;
  typename V::v best = V::splat(kInf<T>);
  typename V::iv besti = V::isplat(-1), jv = V::iota();
  const typename V::iv step = V::isplat(static_cast<I>(W)), rowv = V::isplat(row);
  const typename V::v bv = V::splat(base);
  idx j = 0;
  for (; j + W <= m; j += W) {
    prefetch_ahead<W * sizeof(R)>(r + j);
    typename V::v x;
    if constexpr (std::is_same_v<R, T>) {
      x = V::load(r + j);
    } else {
      typename Wide<R, W>::v a;
      std::memcpy(&a, r + j, sizeof(a));
      x = __builtin_convertvector(a, typename V::v);
    }
    const typename V::v rc = (signed_load<S>(x) - V::load(v + j)) + bv;
    typename V::v dv;
    if constexpr (First) {
      dv = rc;
      V::storei(pred + j, rowv);
    } else {
      const typename V::v old = V::load(d + j);
      const typename V::iv lt = rc < old;
      dv = lt ? rc : old;
      V::storei(pred + j, lt ? rowv : V::loadi(pred + j));
    }
    V::store(d + j, dv);
    const typename V::iv lt2 = dv < best;
    best = lt2 ? dv : best;
    besti = lt2 ? jv : besti;
    jv += step;
  }
  ArgMin<T> out = lane_argmin<T, W>(best, besti);
  for (; j < m; ++j) {
    const T rc = (signed_load<S>(static_cast<T>(r[j])) - v[j]) + base;
    T dj;
    if constexpr (First) {
      dj = rc;
      pred[j] = row;
    } else {
      dj = d[j];
      if (rc < dj) {
        dj = rc;
        pred[j] = row;
      }
    }
    d[j] = dj;
    if (dj < out.val) {
      out.val = dj;
      out.arg = j;
    }
  }
  return out;
}

// min_j (S*r[j] - v[j]) evaluated in float64: the verification of float32 solves.
template <class T, int S, int W>
TT_ALWAYS_INLINE double lb64_body(const T* r, const T* v, idx m) {
  using tv = typename Wide<T, W>::v;
  using dv = typename Wide<double, W>::v;
  dv best = dv{} + kInf<double>;
  idx j = 0;
  for (; j + W <= m; j += W) {
    prefetch_ahead<W * sizeof(T)>(r + j);
    tv a, b;
    std::memcpy(&a, r + j, sizeof(a));
    std::memcpy(&b, v + j, sizeof(b));
    const dv h = signed_load<S>(__builtin_convertvector(a, dv)) - __builtin_convertvector(b, dv);
    best = h < best ? h : best;
  }
  double out = kInf<double>;
  for (int l = 0; l < W; ++l) out = best[l] < out ? best[l] : out;
  for (; j < m; ++j) {
    const double h = signed_load<S>(static_cast<double>(r[j])) - static_cast<double>(v[j]);
    out = h < out ? h : out;
  }
  return out;
}

/// Function table for one (T, S): one instance per instruction set.
template <class T>
struct Kernels {
  using I = pidx<T>;
  EntryFlags (*colmin)(const T*, T*, I*, idx, I);
  Min2<T> (*min2)(const T*, const T*, idx);
  Min2<T> (*min2_check)(const T*, const T*, idx, EntryFlags*);
  Min2<T> (*min2_cache)(const T*, const T*, idx, I*, T*, T*);
  Min2<T> (*min2_check_cache)(const T*, const T*, idx, EntryFlags*, I*, T*, T*);
  Min2<T> (*min2_cache2)(const T*, const T*, idx, I*, T*, T*);  // depth-2 certificate
  // the warm pass's check over two lane sets: a 2W-column certificate (m >= 2W)
  Min2<T> (*min2_check_cache_wide)(const T*, const T*, idx, EntryFlags*, I*, T*, T*);
  ArgMin<T> (*relax_first)(const T*, const T*, T*, I*, idx, T, I);
  ArgMin<T> (*relax)(const T*, const T*, T*, I*, idx, T, I);
  double (*lb64)(const T*, const T*, idx);
  ArgMin<double> (*relax64)(const T*, const double*, double*, std::int64_t*, idx, double,
                            std::int64_t);
  const char* isa;
  int lanes;  // SIMD lanes of T: columns per row in a depth-1 certificate (2 * lanes at depth 2)
};

#define TT_LAP_DEFINE_ISA(NAME, TARGET, BYTES)                                                  \
  template <class T, int S>                                                                     \
  TARGET EntryFlags NAME##_colmin(const T* r, T* v, pidx<T>* a, idx m, pidx<T> row) {           \
    return colmin_body<T, S, (BYTES) / int(sizeof(T))>(r, v, a, m, row);                        \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET Min2<T> NAME##_min2(const T* r, const T* v, idx m) {                                   \
    return min2_body<T, S, (BYTES) / int(sizeof(T))>(r, v, m);                                  \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET Min2<T> NAME##_min2_check(const T* r, const T* v, idx m, EntryFlags* f) {              \
    return min2_body<T, S, (BYTES) / int(sizeof(T)), true>(r, v, m, f);                         \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET Min2<T> NAME##_min2_cache(const T* r, const T* v, idx m, pidx<T>* c, T* cv, T* b) {    \
    return min2_body<T, S, (BYTES) / int(sizeof(T)), false, 1>(r, v, m, nullptr, c, cv, b);     \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET Min2<T> NAME##_min2_cache2(const T* r, const T* v, idx m, pidx<T>* c, T* cv, T* b) {   \
    return min2_body<T, S, (BYTES) / int(sizeof(T)), false, 2>(r, v, m, nullptr, c, cv, b);     \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET Min2<T> NAME##_min2_check_cache(const T* r, const T* v, idx m, EntryFlags* f,          \
                                         pidx<T>* c, T* cv, T* b) {                             \
    return min2_body<T, S, (BYTES) / int(sizeof(T)), true, 1>(r, v, m, f, c, cv, b);            \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET Min2<T> NAME##_min2_check_cache_wide(const T* r, const T* v, idx m, EntryFlags* f,     \
                                              pidx<T>* c, T* cv, T* b) {                        \
    return min2_wide_body<T, S, (BYTES) / int(sizeof(T))>(r, v, m, f, c, cv, b);                \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET ArgMin<T> NAME##_relax_first(const T* r, const T* v, T* d, pidx<T>* p, idx m, T base,  \
                                      pidx<T> row) {                                            \
    return relax_body<T, S, (BYTES) / int(sizeof(T)), true>(r, v, d, p, m, base, row);          \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET ArgMin<T> NAME##_relax(const T* r, const T* v, T* d, pidx<T>* p, idx m, T base,        \
                                pidx<T> row) {                                                  \
    return relax_body<T, S, (BYTES) / int(sizeof(T)), false>(r, v, d, p, m, base, row);         \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET double NAME##_lb64(const T* r, const T* v, idx m) {                                    \
    return lb64_body<T, S, (BYTES) / 8>(r, v, m); /* lanes of double width */             \
  }                                                                                             \
  template <class T, int S>                                                                     \
  TARGET ArgMin<double> NAME##_relax64(const T* r, const double* v, double* d,                  \
                                       std::int64_t* p, idx m, double base, std::int64_t row) { \
    return relax_body<double, S, (BYTES) / 8, false, T>(r, v, d, p, m, base, row);              \
  }                                                                                             \
  template <class T, int S>                                                                     \
  constexpr Kernels<T> NAME##_kernels() {                                                       \
    return Kernels<T>{&NAME##_colmin<T, S>,      &NAME##_min2<T, S>,                          \
                      &NAME##_min2_check<T, S>,  &NAME##_min2_cache<T, S>,                    \
                      &NAME##_min2_check_cache<T, S>, &NAME##_min2_cache2<T, S>,              \
                      &NAME##_min2_check_cache_wide<T, S>,                                    \
                      &NAME##_relax_first<T, S>, &NAME##_relax<T, S>,                         \
                      &NAME##_lb64<T, S>,        &NAME##_relax64<T, S>,                       \
                      #NAME,                                                                  \
                      (BYTES) / int(sizeof(T))};                                              \
  }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TT_LAP_X86 1
TT_LAP_DEFINE_ISA(avx512, __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))), 64)
TT_LAP_DEFINE_ISA(avx2, __attribute__((target("avx2,fma"))), 32)
#endif
TT_LAP_DEFINE_ISA(base, , 16)

/// The kernels for the widest instruction set this CPU supports (decided once).
template <class T, int S>
const Kernels<T>& kernels() {
  static const Kernels<T> k = [] {
#ifdef TT_LAP_X86
    __builtin_cpu_init();
    // TRAJTRANSFER_LAP_ISA=avx2|base caps the choice (tests run every kernel set this way).
    const char* cap = std::getenv("TRAJTRANSFER_LAP_ISA");
    const bool allow512 = cap == nullptr || std::strcmp(cap, "avx512") == 0;
    const bool allow256 = allow512 || std::strcmp(cap, "avx2") == 0;
    if (allow512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
      return avx512_kernels<T, S>();
    }
    if (allow256 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return avx2_kernels<T, S>();
    }
#endif
    return base_kernels<T, S>();
  }();
  return k;
}

}  // namespace trajtransfer::lap::detail

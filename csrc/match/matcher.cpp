// Coordinate-descent driver, pair store and cost-matrix builder (see matcher.hpp).
#include "match/matcher.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <new>
#include <numeric>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define TT_MATCH_HAVE_ATFORK 1
#endif

#include "blas.hpp"
#include "lap/lap.hpp"
#include "match/py_random.hpp"

namespace trajtransfer::match {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::int64_t product(const std::vector<std::int64_t>& v, std::size_t lo, std::size_t hi) {
  std::int64_t p = 1;
  for (std::size_t i = lo; i < hi; ++i) p *= v[i];
  return p;
}

/// float64 dot product of two float rows. Eight independent partial sums break the add
/// latency chain (and let the compiler vectorise) without -ffast-math.
double dot_f64(const float* x, const float* y, std::int64_t n) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int u = 0; u < 8; ++u) {
      part[u] += static_cast<double>(x[i + u]) * static_cast<double>(y[i + u]);
    }
  }
  double tail = 0.0;
  for (; i < n; ++i) tail += static_cast<double>(x[i]) * static_cast<double>(y[i]);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])) +
         tail;
}

// Floating-point operations of an (n x inner) by (inner x n) product.
double gemm_flops(std::int64_t n, std::int64_t inner) {
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(inner);
}

bool is_permutation(const std::int64_t* p, std::int64_t n, std::vector<char>& seen) {
  seen.assign(static_cast<std::size_t>(n), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    if (p[i] < 0 || p[i] >= n || seen[static_cast<std::size_t>(p[i])]) return false;
    seen[static_cast<std::size_t>(p[i])] = 1;
  }
  return true;
}

bool is_identity(const std::vector<std::int64_t>& p) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] != static_cast<std::int64_t>(i)) return false;
  }
  return true;
}

/// [pair store] Ask the kernel to populate the pages of `store`'s unused capacity (the part
/// that add() will write next). One madvise call costs a fraction of the page faults it
/// replaces; a kernel without MADV_POPULATE_WRITE (< 5.14) refuses it and the pages are
/// faulted in on first write as before. Small stores are left alone.
void prefault_unused(FloatStore& store) {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  constexpr std::uintptr_t kPage = 4096;
  const auto begin = reinterpret_cast<std::uintptr_t>(store.data() + store.size());
  const auto end = reinterpret_cast<std::uintptr_t>(store.data() + store.capacity());
  const std::uintptr_t lo = (begin + kPage - 1) & ~(kPage - 1), hi = end & ~(kPage - 1);
  if (hi > lo && hi - lo >= 16 * kPage) {
    (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);
  }
#else
  (void)store;
#endif
}

/// changed = the positions where `now` and `before` differ. Returns whether a correction on
/// those rows/columns beats a rebuild: a rank-|changed| correction costs |changed|/n of one, so
/// up to half of them (a rebuild also resets the float32 rounding that corrections accumulate).
bool collect_changed(const std::vector<std::int64_t>& now, const std::vector<std::int64_t>& before,
                     std::vector<std::int64_t>& changed) {
  changed.clear();
  for (std::size_t i = 0; i < now.size(); ++i) {
    if (now[i] != before[i]) changed.push_back(static_cast<std::int64_t>(i));
  }
  return 2 * changed.size() <= now.size();
}

// Largest GEMM chunk (floats) of gathered source rows: bounds scratch memory at 16 MiB while
// keeping the inner dimension long enough for BLAS efficiency.
constexpr std::int64_t kChunkFloats = std::int64_t{1} << 22;

/// Every live matcher, for the fork handlers. Never destroyed: a matcher owned by a Python
/// object can outlive static destruction at exit.
struct Registry {
  std::mutex mu;
  std::vector<Matcher*> live;
  std::vector<Matcher*> held;  ///< idle at fork(): locked by the forking thread across it
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace

// fork() copies a matcher's mutex as it is: one locked by another thread's call would never be
// unlocked in the child. So the forking thread takes the locks of the idle matchers (they then
// stay consistent through the fork) and only notes the busy ones, without waiting for them: in
// the child those get a fresh mutex and are marked forked_mid_call().
Matcher::Matcher() {
#ifdef TT_MATCH_HAVE_ATFORK
  static const int registered = pthread_atfork([] { before_fork(); }, [] { after_fork(false); },
                                               [] { after_fork(true); });
  (void)registered;
#endif
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  r.live.push_back(this);
}

Matcher::~Matcher() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  r.live.erase(std::find(r.live.begin(), r.live.end(), this));
}

void Matcher::before_fork() {
  Registry& r = registry();
  r.mu.lock();
  for (Matcher* m : r.live) {
    if (m->mutex_.try_lock()) r.held.push_back(m);
  }
}

void Matcher::after_fork(bool child) {
  Registry& r = registry();
  for (Matcher* m : r.live) {
    if (std::find(r.held.begin(), r.held.end(), m) != r.held.end()) {
      m->mutex_.unlock();
    } else if (child) {
      new (&m->mutex_) std::mutex();  // the copy is locked by a thread that does not exist here
      m->forked_mid_call_ = true;
    }
  }
  r.held.clear();
  r.mu.unlock();
}

Error Matcher::create(std::vector<std::int64_t> group_sizes, std::vector<TensorSpec> tensors,
                      std::unique_ptr<Matcher>& out) {
  std::unique_ptr<Matcher> mt(new Matcher());
  const int num_groups = static_cast<int>(group_sizes.size());
  mt->groups_.resize(group_sizes.size());
  for (int g = 0; g < num_groups; ++g) {
    if (group_sizes[static_cast<std::size_t>(g)] < 1) return {Status::size_mismatch, g, -1};
    Group& gr = mt->groups_[static_cast<std::size_t>(g)];
    gr.n = group_sizes[static_cast<std::size_t>(g)];
    gr.perm.resize(static_cast<std::size_t>(gr.n));
    std::iota(gr.perm.begin(), gr.perm.end(), std::int64_t{0});
    gr.static_cost.assign(static_cast<std::size_t>(gr.n * gr.n), 0.0f);
  }
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const TensorSpec& ts = tensors[t];
    if (ts.shape.size() != ts.groups.size()) return {Status::bad_spec, static_cast<int>(t), -1};
    std::vector<int> used;
    for (std::size_t a = 0; a < ts.shape.size(); ++a) {
      const int g = ts.groups[a];
      if (ts.shape[a] < 0) return {Status::size_mismatch, static_cast<std::int64_t>(t),
                                   static_cast<std::int64_t>(a)};
      if (g < -1 || g >= num_groups) {
        return {Status::bad_spec, static_cast<std::int64_t>(t), static_cast<std::int64_t>(a)};
      }
      if (g < 0) continue;
      if (std::find(used.begin(), used.end(), g) != used.end()) {
        return {Status::bad_spec, static_cast<std::int64_t>(t), static_cast<std::int64_t>(a)};
      }
      used.push_back(g);
      if (ts.shape[a] != group_sizes[static_cast<std::size_t>(g)]) {
        return {Status::size_mismatch, static_cast<std::int64_t>(t), static_cast<std::int64_t>(a)};
      }
    }
    bool first = true;
    for (std::size_t a = 0; a < ts.shape.size(); ++a) {
      if (ts.groups[a] < 0) continue;
      Member mb;
      mb.tensor = static_cast<int>(t);
      mb.axis = static_cast<int>(a);
      mb.group = ts.groups[a];
      mb.n = ts.shape[a];
      mb.pre = product(ts.shape, 0, a);
      mb.post = product(ts.shape, a + 1, ts.shape.size());
      mb.m = mb.pre * mb.post;
      mb.primary = first;
      first = false;
      for (std::size_t b = 0; b < ts.shape.size(); ++b) {
        if (b == a) continue;
        mb.others.push_back({ts.shape[b], ts.groups[b]});
        if (ts.groups[b] >= 0) mb.is_static = false;
      }
      mt->groups_[static_cast<std::size_t>(mb.group)].members.push_back(
          static_cast<int>(mt->members_.size()));
      for (int g : used) {
        if (g == mb.group) continue;
        auto& nb = mt->groups_[static_cast<std::size_t>(mb.group)].neighbours;
        if (std::find(nb.begin(), nb.end(), g) == nb.end()) nb.push_back(g);
      }
      mb.owner = static_cast<int>(mt->members_.size());
      // Only the static GEMM and objective() read a static member's store: keeping the
      // tensor's own layout saves the transpose, and its permutation then moves whole rows.
      mb.native = mb.is_static && mb.pre == 1 && mb.post > 1;
      mt->members_.push_back(std::move(mb));
    }
    if (used.size() == 2) {
      // Store the tensor once: the later axis b owns the rows layout, the earlier axis a
      // contracts over each block's columns (see Member).
      Member& mb_b = mt->members_[mt->members_.size() - 1];
      Member& mb_a = mt->members_[mt->members_.size() - 2];
      mb_b.primary = true;
      mb_a.primary = false;
      mb_a.kind = Kind::cols;
      mb_a.owner = static_cast<int>(mt->members_.size() - 1);
      mb_a.blocks = mb_a.pre;
      mb_a.seg_len = mb_b.n;
      mb_a.segs = mb_a.post / mb_b.n;
      mb_a.cols_other = static_cast<std::size_t>(mb_b.axis - 1);
    }
  }
  for (Group& gr : mt->groups_) {
    gr.all_static = std::all_of(gr.members.begin(), gr.members.end(), [&](int mi) {
      return mt->members_[static_cast<std::size_t>(mi)].is_static;
    });
  }
  mt->tensors_ = std::move(tensors);
  mt->perms_view_.resize(mt->groups_.size());
  mt->primary_of_.assign(mt->tensors_.size(), -1);
  for (std::size_t mi = 0; mi < mt->members_.size(); ++mi) {
    const Member& mb = mt->members_[mi];
    if (mb.primary) mt->primary_of_[static_cast<std::size_t>(mb.tensor)] = static_cast<int>(mi);
  }
  ObjectiveCache& ic = mt->identity_cache_;
  ic.acc.assign(mt->members_.size(), {});
  for (const Group& gr : mt->groups_) ic.perms.push_back(gr.perm);  // identity at creation
  ic.valid = true;
  out = std::move(mt);
  return {};
}

bool Matcher::stored_as_given(const Member& mb) const {
  return mb.kind == Kind::rows && (mb.native || mb.post == 1);
}

Error Matcher::add(const float* const* targets, const float* const* sources, double weight) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!std::isfinite(weight)) return {Status::bad_argument, -1, -1};
  // Validate everything first so that a failure leaves the store untouched. The float64 dot
  // <target, source> that the exact objective needs at the identity doubles as the finiteness
  // check (products of finite floats cannot overflow a double, and any inf or NaN operand
  // makes the sum inf or NaN), saving a pass over the pair.
  const std::size_t T = tensors_.size();
  std::vector<double>& raw_dot = add_dots_;
  raw_dot.assign(T, 0.0);
  const auto numel = [&](std::int64_t t) {
    const TensorSpec& ts = tensors_[static_cast<std::size_t>(t)];
    return product(ts.shape, 0, ts.shape.size());
  };
  parallel::run_items<char>(static_cast<std::int64_t>(T), numel, [&](std::int64_t t, char&) {
    raw_dot[static_cast<std::size_t>(t)] = dot_f64(targets[t], sources[t], numel(t));
  });
  for (std::size_t t = 0; t < T; ++t) {
    if (!std::isfinite(raw_dot[t])) return {Status::non_finite, static_cast<std::int64_t>(t), -1};
  }
  const float alpha = static_cast<float>(weight);
  for (std::size_t t = 0; t < T; ++t) {
    if (primary_of_[t] < 0) constant_ += weight * raw_dot[t];
  }
  for (Member& mb : members_) {
    if (mb.kind == Kind::cols) continue;  // reads its owner's store
    const std::size_t block = static_cast<std::size_t>(mb.m * mb.n);
    const std::size_t old = mb.target.size();
    mb.target.resize(old + block);
    mb.source.resize(old + block);
    if (stored_as_given(mb)) {  // native (n, post), or rows with post == 1: a plain copy
      copy_floats(targets[mb.tensor], static_cast<std::int64_t>(block), mb.target.data() + old);
      copy_floats(sources[mb.tensor], static_cast<std::int64_t>(block), mb.source.data() + old);
    } else {
      unfold_rows(targets[mb.tensor], mb.pre, mb.n, mb.post, mb.target.data() + old);
      unfold_rows(sources[mb.tensor], mb.pre, mb.n, mb.post, mb.source.data() + old);
    }
    if (mb.is_static && mb.m > 0) {
      // Static term: independent of every other permutation, so accumulate it once, here.
      const auto t0 = Clock::now();
      Group& g = groups_[static_cast<std::size_t>(mb.group)];
      static_gemm_flops_ += gemm_flops(mb.n, mb.m);
      if (mb.native) {  // C += T S^T on the (n, post) layout: no transpose needed
        blas::sgemm_rows_nt(static_cast<int>(mb.n), static_cast<int>(mb.post), alpha,
                            mb.target.data() + old, mb.source.data() + old, 1.0f,
                            g.static_cost.data());
      } else {
        blas::sgemm_tn_rows(static_cast<int>(mb.n), static_cast<int>(mb.m), alpha,
                            mb.target.data() + old, mb.source.data() + old, 1.0f,
                            g.static_cost.data());
      }
      static_gemm_time_ += seconds_since(t0);
    }
    if (mb.primary) {
      // The pair's exact term at the identity: an identity-start solve then needs no pass over
      // the stored pairs for history[0]. (Summed in the input's order: objective() at the
      // identity reads this cache too, so every exact value at the identity agrees bitwise.)
      identity_cache_.acc[static_cast<std::size_t>(&mb - members_.data())].push_back(
          raw_dot[static_cast<std::size_t>(mb.tensor)]);
    }
  }
  weights_.push_back(weight);
  ++num_pairs_;
  identity_cache_.upto = num_pairs_;
  // [objective cache] Extend the cache at the last exact objective's permutations by this pair
  // now, while its rows are still in cache: the next solve's final objective then re-reads only
  // the rows whose permutation changed (FGMT: a few dozen of 512) instead of the whole pair,
  // cold. Same per-row dots and summation order as extending it at the end of the solve.
  if (last_cache_.valid && last_cache_.upto == num_pairs_ - 1) extend_cache(last_cache_);
  // Dynamic terms are linear in the pairs: a term that is up to date for its recorded
  // permutations stays so after adding this pair's share at those same permutations (FGMT's
  // warm-started solves then only correct for the rows whose permutation changed).
  const auto t0 = Clock::now();
  for (Member& mb : members_) {
    if (mb.is_static || !mb.contrib_valid) continue;
    if (mb.kind == Kind::cols) {
      static_gemm_flops_ +=
          accumulate_cols(mb, num_pairs_ - 1, mb.seen_perms[mb.cols_other].data(), false);
    } else {
      std::vector<const std::int64_t*> seen(mb.others.size(), nullptr);
      for (std::size_t j = 0; j < mb.others.size(); ++j) {
        if (mb.others[j].group >= 0) seen[j] = mb.seen_perms[j].data();
      }
      build_row_map(mb.others, seen, row_map_);
      static_gemm_flops_ += accumulate_rows(mb, num_pairs_ - 1, false);
    }
  }
  static_gemm_time_ += seconds_since(t0);
  return {};
}

bool Matcher::perm_changed_since(const Member& mb) const {
  if (!mb.contrib_valid) return true;
  std::size_t j = 0;
  for (const OtherAxis& ax : mb.others) {
    if (ax.group < 0) continue;
    if (groups_[static_cast<std::size_t>(ax.group)].version != mb.seen[j++]) return true;
  }
  return false;
}

void Matcher::reserve(std::int64_t pairs) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::size_t k = static_cast<std::size_t>(std::max<std::int64_t>(pairs, 0));
  std::vector<FloatStore*> fresh;
  for (Member& mb : members_) {
    if (mb.kind == Kind::cols) continue;
    const std::size_t want = k * static_cast<std::size_t>(mb.m * mb.n);
    // [pair store] A store that grows gets fresh memory: fault its pages in now, in one call
    // per store, rather than one page fault per 4 KiB page as add() first writes them. (A store
    // kept by clear_pairs() has its pages already.)
    const bool grows = want > mb.target.capacity();
    mb.target.reserve(want);
    mb.source.reserve(want);
    if (grows) {
      fresh.push_back(&mb.target);
      fresh.push_back(&mb.source);
    }
  }
  // Page population is the kernel zeroing and mapping pages: it scales with cores (Conv8 with
  // K = 30 reserves 1.2 GB).
  parallel::run_items<char>(
      static_cast<std::int64_t>(fresh.size()),
      [&](std::int64_t i) {
        const FloatStore& st = *fresh[static_cast<std::size_t>(i)];
        return static_cast<std::int64_t>(st.capacity() - st.size());
      },
      [&](std::int64_t i, char&) { prefault_unused(*fresh[static_cast<std::size_t>(i)]); });
  weights_.reserve(k);
  for (auto& a : identity_cache_.acc) a.reserve(k);
}

void Matcher::clear_pairs() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Member& mb : members_) {
    mb.target.clear();  // clear() keeps the capacity, and so the already faulted-in pages
    mb.source.clear();
    mb.contrib_valid = false;
    mb.seen.clear();
    mb.seen_perms.clear();
  }
  for (Group& gr : groups_) std::fill(gr.static_cost.begin(), gr.static_cost.end(), 0.0f);
  weights_.clear();
  constant_ = 0.0;
  num_pairs_ = 0;
  for (auto& a : identity_cache_.acc) a.clear();
  identity_cache_.upto = 0;
  last_cache_.valid = false;
  // Kept on purpose: each group's perm, version, duals and has_duals (see the header).
}

std::vector<const std::int64_t*> Matcher::axis_perms(const Member& mb) const {
  std::vector<const std::int64_t*> p(mb.others.size(), nullptr);
  for (std::size_t j = 0; j < mb.others.size(); ++j) {
    const int g = mb.others[j].group;
    if (g >= 0) p[j] = groups_[static_cast<std::size_t>(g)].perm.data();
  }
  return p;
}

void Matcher::refresh_member(Member& mb, SolveResult& stats) {
  if (mb.kind == Kind::cols) {
    const std::vector<std::int64_t>& q =
        groups_[static_cast<std::size_t>(mb.others[mb.cols_other].group)].perm;
    if (!mb.contrib_valid) {
      full_build_cols(mb, stats);
    } else {
      if (collect_changed(q, mb.seen_perms[mb.cols_other], changed_)) {
        if (!changed_.empty()) delta_build_cols(mb, stats);
      } else {
        full_build_cols(mb, stats);
      }
    }
  } else {
    refresh_rows(mb, stats);
  }
  mb.seen.clear();
  mb.seen_perms.assign(mb.others.size(), {});
  for (std::size_t j = 0; j < mb.others.size(); ++j) {
    const int g = mb.others[j].group;
    if (g < 0) continue;
    mb.seen.push_back(groups_[static_cast<std::size_t>(g)].version);
    mb.seen_perms[j] = groups_[static_cast<std::size_t>(g)].perm;
  }
  mb.contrib_valid = true;
}

void Matcher::full_build_cols(Member& mb, SolveResult& stats) {
  const std::int64_t* q =
      groups_[static_cast<std::size_t>(mb.others[mb.cols_other].group)].perm.data();
  stats.gemm_flops += accumulate_cols(mb, 0, q, true);
  ++stats.member_builds;
}

double Matcher::accumulate_cols(Member& mb, std::int64_t k0, const std::int64_t* q,
                                bool overwrite) {
  // contrib (+)= sum over pairs k >= k0 and blocks p of T_kp (n_a x W) * G(w_k S_kp)^T, where
  // G applies q (the permutation of b) inside every segment of n_b floats.
  const Member& own = members_[static_cast<std::size_t>(mb.owner)];
  const std::int64_t n = mb.n, nb = mb.seg_len, segs = mb.segs, W = segs * nb;
  mb.contrib.resize(static_cast<std::size_t>(n * n));
  if (overwrite) std::fill(mb.contrib.begin(), mb.contrib.end(), 0.0f);
  if (W == 0 || k0 >= num_pairs_) return 0.0;  // empty: BLAS would reject lda = 0
  scratch_.resize(static_cast<std::size_t>(n * W));
  for (std::int64_t k = k0; k < num_pairs_; ++k) {
    const float wf = static_cast<float>(weights_[static_cast<std::size_t>(k)]);
    for (std::int64_t p = 0; p < mb.blocks; ++p) {
      const std::int64_t off = k * own.m * own.n + p * n * W;
      const float* src = own.source.data() + off;
      const float* tgt = own.target.data() + off;
      // Each thread gathers the source rows of its own output columns, then multiplies: the
      // gather (a fifth of the GEMM's time) runs in parallel too, with one fork/join.
      blas::split_rows(static_cast<int>(n), gemm_flops(n, W), [&](int j0, int j1) {
        float* part = scratch_.data() + j0 * W;
        for (std::int64_t i = j0 * segs; i < j1 * segs; ++i) {
          const float* s_seg = src + i * nb;
          float* d_seg = scratch_.data() + i * nb;
          for (std::int64_t j = 0; j < nb; ++j) d_seg[j] = wf * s_seg[q[j]];
        }
        blas::sgemm_rows_nt_cols(static_cast<int>(n), static_cast<int>(W), j0, j1, 1.0f, tgt,
                                 part, 1.0f, mb.contrib.data());
      });
    }
  }
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) *
         static_cast<double>(W * mb.blocks * (num_pairs_ - k0));
}

void Matcher::delta_build_cols(Member& mb, SolveResult& stats) {
  // contrib += T restricted to the changed columns times the change of the gathered source.
  const Member& own = members_[static_cast<std::size_t>(mb.owner)];
  const std::int64_t n = mb.n, nb = mb.seg_len, segs = mb.segs, W = segs * nb;
  const std::int64_t c = static_cast<std::int64_t>(changed_.size()), Wc = segs * c;
  if (Wc == 0) return;
  const std::int64_t* q =
      groups_[static_cast<std::size_t>(mb.others[mb.cols_other].group)].perm.data();
  const std::int64_t* q_old = mb.seen_perms[mb.cols_other].data();
  scratch_.resize(static_cast<std::size_t>(n * Wc));
  scratch_t_.resize(static_cast<std::size_t>(n * Wc));
  for (std::int64_t k = 0; k < num_pairs_; ++k) {
    const float wf = static_cast<float>(weights_[static_cast<std::size_t>(k)]);
    for (std::int64_t p = 0; p < mb.blocks; ++p) {
      const std::int64_t off = k * own.m * own.n + p * n * W;
      const float* src = own.source.data() + off;
      const float* tgt = own.target.data() + off;
      // Gather both sides on the GEMM's threads (it needs all of them, so two fork/joins).
      blas::split_rows(static_cast<int>(n), gemm_flops(n, Wc), [&](int i0, int i1) {
        for (std::int64_t i = i0 * segs; i < i1 * segs; ++i) {
          const float* s_seg = src + i * nb;
          const float* t_seg = tgt + i * nb;
          float* ds = scratch_.data() + i * c;
          float* dt = scratch_t_.data() + i * c;
          for (std::int64_t jj = 0; jj < c; ++jj) {
            const std::int64_t j = changed_[static_cast<std::size_t>(jj)];
            dt[jj] = t_seg[j];
            ds[jj] = wf * (s_seg[q[j]] - s_seg[q_old[j]]);
          }
        }
      });
      blas::sgemm_rows_nt(static_cast<int>(n), static_cast<int>(Wc), 1.0f, scratch_t_.data(),
                          scratch_.data(), 1.0f, mb.contrib.data());
    }
  }
  ++stats.delta_builds;
  stats.gemm_flops += 2.0 * static_cast<double>(n) * static_cast<double>(n) *
                      static_cast<double>(Wc * mb.blocks * num_pairs_);
}

void Matcher::refresh_rows(Member& mb, SolveResult& stats) {
  build_row_map(mb.others, axis_perms(mb), row_map_);
  if (mb.contrib_valid) {
    // Which stored rows now gather a different source row than when contrib was built?
    std::vector<const std::int64_t*> old(mb.others.size(), nullptr);
    for (std::size_t j = 0; j < mb.others.size(); ++j) {
      if (mb.others[j].group >= 0) old[j] = mb.seen_perms[j].data();
    }
    build_row_map(mb.others, old, old_map_);
    if (collect_changed(row_map_, old_map_, changed_)) {
      if (!changed_.empty()) delta_build(mb, stats);
    } else {
      full_build(mb, stats);
    }
  } else {
    full_build(mb, stats);
  }
}

void Matcher::full_build(Member& mb, SolveResult& stats) {
  stats.gemm_flops += accumulate_rows(mb, 0, true);
  ++stats.member_builds;
}

double Matcher::accumulate_rows(Member& mb, std::int64_t k0, bool overwrite) {
  // contrib (+)= sum over pairs k >= k0 of T_k^T G(w_k S_k), G = the rows reindex in row_map_.
  const std::int64_t n = mb.n, m = mb.m, l_begin = k0 * m, l_end = m * num_pairs_;
  mb.contrib.resize(static_cast<std::size_t>(n * n));
  if (overwrite) std::fill(mb.contrib.begin(), mb.contrib.end(), 0.0f);
  if (l_end <= l_begin) return 0.0;
  const std::int64_t chunk = std::max<std::int64_t>(1, kChunkFloats / std::max<std::int64_t>(n, 1));
  scratch_.resize(static_cast<std::size_t>(std::min(chunk, l_end - l_begin) * n));
  for (std::int64_t l0 = l_begin; l0 < l_end; l0 += chunk) {
    const std::int64_t l1 = std::min(l_end, l0 + chunk);
    // Each thread gathers its output columns of the source rows (through the other axes'
    // permutations, weight folded in) and multiplies them: gather and GEMM both in parallel.
    const std::int64_t rows = l1 - l0;
    const float* t_chunk = mb.target.data() + l0 * n;
    blas::split_rows(static_cast<int>(n), gemm_flops(n, rows), [&](int j0, int j1) {
      const std::int64_t cols = j1 - j0;
      float* part = scratch_.data() + rows * j0;
      for (std::int64_t l = l0; l < l1; ++l) {
        const std::int64_t k = l / m, r = l - k * m;
        const float* src =
            mb.source.data() + (k * m + row_map_[static_cast<std::size_t>(r)]) * n + j0;
        float* dst = part + (l - l0) * cols;
        const double w = weights_[static_cast<std::size_t>(k)];
        if (w == 1.0) {
          std::memcpy(dst, src, sizeof(float) * static_cast<std::size_t>(cols));
        } else {
          const float wf = static_cast<float>(w);
          for (std::int64_t i = 0; i < cols; ++i) dst[i] = wf * src[i];
        }
      }
      blas::sgemm_tn_rows_cols(static_cast<int>(n), static_cast<int>(rows), j0, j1, 1.0f,
                               t_chunk, part, static_cast<int>(cols), 1.0f, mb.contrib.data());
    });
  }
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) *
         static_cast<double>(l_end - l_begin);
}

void Matcher::delta_build(Member& mb, SolveResult& stats) {
  // contrib += sum over changed rows r and pairs k of T[k, r]^T (w_k S[k, new(r)] - w_k S[k, old(r)])
  const std::int64_t n = mb.n, m = mb.m, c = static_cast<std::int64_t>(changed_.size());
  const std::int64_t rows_total = c * num_pairs_;
  const std::int64_t chunk = std::max<std::int64_t>(1, kChunkFloats / std::max<std::int64_t>(n, 1));
  const std::size_t cap = static_cast<std::size_t>(std::min(chunk, rows_total) * n);
  scratch_.resize(cap);
  scratch_t_.resize(cap);
  for (std::int64_t l0 = 0; l0 < rows_total; l0 += chunk) {
    const std::int64_t l1 = std::min(rows_total, l0 + chunk);
    blas::split_rows(static_cast<int>(l1 - l0), gemm_flops(n, l1 - l0), [&](int a, int b) {
      for (std::int64_t l = l0 + a; l < l0 + b; ++l) {
        const std::int64_t k = l / c;
        const std::int64_t r = changed_[static_cast<std::size_t>(l - k * c)];
        const float* t = mb.target.data() + (k * m + r) * n;
        const float* s_new =
            mb.source.data() + (k * m + row_map_[static_cast<std::size_t>(r)]) * n;
        const float* s_old =
            mb.source.data() + (k * m + old_map_[static_cast<std::size_t>(r)]) * n;
        float* dt = scratch_t_.data() + (l - l0) * n;
        float* ds = scratch_.data() + (l - l0) * n;
        const float wf = static_cast<float>(weights_[static_cast<std::size_t>(k)]);
        std::memcpy(dt, t, sizeof(float) * static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i) ds[i] = wf * (s_new[i] - s_old[i]);
      }
    });
    blas::sgemm_tn_rows(static_cast<int>(n), static_cast<int>(l1 - l0), 1.0f, scratch_t_.data(),
                        scratch_.data(), 1.0f, mb.contrib.data());
  }
  ++stats.delta_builds;
  stats.gemm_flops += 2.0 * static_cast<double>(n) * static_cast<double>(n) *
                      static_cast<double>(rows_total);
}

const float* Matcher::build_cost(Group& g, std::vector<float>& cost, SolveResult& stats,
                                const std::vector<char>* assigned) {
  // A group whose terms are all static (every group of a one-hidden-layer MLP) has its cost
  // ready in static_cost: the LAP reads it in place (saves a 1 MB copy per FGMT step on digits).
  if (g.all_static) return g.static_cost.data();
  const auto t0 = Clock::now();
  cost.assign(g.static_cost.begin(), g.static_cost.end());
  for (int mi : g.members) {
    Member& mb = members_[static_cast<std::size_t>(mi)];
    if (mb.is_static) continue;
    bool ready = true;  // the greedy pass leaves out terms that need an unassigned group
    for (const OtherAxis& ax : mb.others) {
      if (assigned && ax.group >= 0 && !(*assigned)[static_cast<std::size_t>(ax.group)]) {
        ready = false;
      }
    }
    if (!ready) continue;
    if (perm_changed_since(mb)) refresh_member(mb, stats);
    const float* c = mb.contrib.data();
    float* dst = cost.data();
    const std::size_t nn = cost.size();
    for (std::size_t i = 0; i < nn; ++i) dst[i] += c[i];
  }
  stats.time_gemm += seconds_since(t0);
  return cost.data();
}

bool Matcher::solve_group(std::size_t gi, const float* cp, std::vector<std::int64_t>& cols,
                          std::vector<float>& new_duals, SolveResult& out) {
  Group& gr = groups_[gi];
  cols.resize(static_cast<std::size_t>(gr.n));
  new_duals.resize(static_cast<std::size_t>(gr.n));
  const auto t_lap = Clock::now();
  lap::WarmStart<float> warm;
  if (gr.has_duals) {
    // The previous LAP's own (duals, assignment) pair: an optimal pair for the old costs,
    // so its duality gap measures only how far the costs moved. (gr.perm may be a fresh
    // init, e.g. GMT/FGMT's identity starts, whose gap would look like a heavy perturbation
    // and make the solver restart cold.)
    warm.col_duals = gr.duals.data();
    warm.col_of_row = gr.lap_cols.data();
  }
  const lap::Solution<float> sol{cols.data(), nullptr, new_duals.data()};
  const lap::Status st = lap::solve<float>(cp, gr.n, gr.n, gr.n, true, sol, warm);
  out.time_lap += seconds_since(t_lap);
  ++out.lap_solves;
  last_lap_interrupted_ = st == lap::Status::interrupted;
  if (st != lap::Status::ok) return false;
  gr.duals.swap(new_duals);
  gr.lap_cols = cols;
  gr.has_duals = true;
  return true;
}

Error Matcher::greedy_pass(SolveResult& out) {
  // Spec order runs input to output for chains: each group then sees the terms it shares with
  // the groups before it, already assigned, and none that would pin it to an identity guess.
  const std::size_t G = groups_.size();
  std::vector<char> assigned(G, 0);
  std::vector<float> cost, new_duals;
  std::vector<std::int64_t> cols;
  for (std::size_t g = 0; g < G; ++g) {
    Group& gr = groups_[g];
    const float* cp = build_cost(gr, cost, out, &assigned);
    if (!solve_group(g, cp, cols, new_duals, out)) {
      return {last_lap_interrupted_ ? Status::interrupted : Status::lap_failed,
              static_cast<std::int64_t>(g), -1};
    }
    if (cols != gr.perm) {
      gr.perm = cols;
      ++gr.version;
    }
    assigned[g] = 1;
  }
  return {};
}

double Matcher::objective(const std::vector<std::vector<std::int64_t>>& perms) {
  std::lock_guard<std::mutex> lock(mutex_);
  return objective_locked(perms);
}

double Matcher::pair_term(const Member& mb, std::int64_t k, const std::int64_t* p,
                          const std::int64_t* map, std::vector<float>& row) const {
  // <T_k, pi(S_k)> of one primary member, float64. p: the member's own group permutation
  // (null: identity); map: the rows reindex of the other axes (null: identity).
  const std::int64_t n = mb.n, m = mb.m;
  const float* tk = mb.target.data() + k * m * n;
  const float* sk = mb.source.data() + k * m * n;
  double acc = 0.0;
  if (mb.native) {  // n rows of post floats; p moves whole rows
    const std::int64_t w = mb.post;
    for (std::int64_t i = 0; i < n; ++i) acc += dot_f64(tk + i * w, sk + (p ? p[i] : i) * w, w);
    return acc;
  }
  row.resize(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < m; ++r) {
    const float* tr = tk + r * n;
    const float* sr = sk + (map ? map[r] : r) * n;
    if (p != nullptr) {  // gather first, so that the float64 dot runs on contiguous rows
      for (std::int64_t i = 0; i < n; ++i) row[static_cast<std::size_t>(i)] = sr[p[i]];
      sr = row.data();
    }
    acc += dot_f64(tr, sr, n);
  }
  return acc;
}

double Matcher::native_term(const Member& mb, std::int64_t k, const std::int64_t* p, double* dots,
                            const std::vector<std::int64_t>* only) const {
  // pair_term of a native member, keeping its row dots; with `only`, recompute just those rows
  // and reuse the others from `dots`. The sum runs in row order as in pair_term: bit-identical.
  const std::int64_t n = mb.n, w = mb.post;
  const float* tk = mb.target.data() + k * mb.m * n;
  const float* sk = mb.source.data() + k * mb.m * n;
  if (only == nullptr) {
    for (std::int64_t i = 0; i < n; ++i) dots[i] = dot_f64(tk + i * w, sk + p[i] * w, w);
  } else {
    for (const std::int64_t i : *only) dots[i] = dot_f64(tk + i * w, sk + p[i] * w, w);
  }
  double acc = 0.0;
  for (std::int64_t i = 0; i < n; ++i) acc += dots[i];
  return acc;
}

double Matcher::sum_terms(const std::vector<std::vector<double>>& acc) const {
  // One fixed summation order (members, then pairs) whichever way the terms were obtained, so
  // cached and fresh objectives agree bit for bit.
  double total = constant_;
  for (std::size_t mi = 0; mi < members_.size(); ++mi) {
    if (!members_[mi].primary) continue;
    for (std::int64_t k = 0; k < num_pairs_; ++k) {
      total += weights_[static_cast<std::size_t>(k)] * acc[mi][static_cast<std::size_t>(k)];
    }
  }
  return total;
}

void Matcher::extend_cache(ObjectiveCache& c) {
  if (c.upto >= num_pairs_) return;
  std::vector<std::size_t> primaries;
  for (std::size_t mi = 0; mi < members_.size(); ++mi) {
    if (members_[mi].primary) primaries.push_back(mi);
  }
  extend_members(c, primaries, c.upto, num_pairs_);
  c.upto = num_pairs_;
}

void Matcher::extend_members(ObjectiveCache& c, const std::vector<std::size_t>& mis,
                             std::int64_t k0, std::int64_t k1) {
  // Terms of members `mis` for pairs [k0, k1) at c.perms. Each (member, pair) term is computed
  // whole by one thread, exactly as serially, so the values (and the objective summed from them
  // in sum_terms' fixed order) do not depend on the thread count.
  struct Job {
    const Member* mb;
    std::vector<double>* acc;
    double* dots;                   // native members: row dots of pair k0 (n per pair)
    const std::int64_t* own;        // null: the member's own group is at the identity
    const std::int64_t* map;        // null: the other axes are at the identity
  };
  std::vector<Job> jobs;
  std::vector<std::vector<std::int64_t>> maps(mis.size());
  for (std::size_t t = 0; t < mis.size(); ++t) {
    const std::size_t mi = mis[t];
    const Member& mb = members_[mi];
    std::vector<const std::int64_t*> ap(mb.others.size(), nullptr);
    bool map_identity = true;
    for (std::size_t j = 0; j < mb.others.size(); ++j) {
      const int g = mb.others[j].group;
      if (g < 0) continue;
      const auto& q = c.perms[static_cast<std::size_t>(g)];
      ap[j] = q.data();
      map_identity = map_identity && is_identity(q);
    }
    if (!map_identity) build_row_map(mb.others, ap, maps[t]);
    const std::vector<std::int64_t>& pv = c.perms[static_cast<std::size_t>(mb.group)];
    const bool identity = is_identity(pv);
    std::vector<double>& a = c.acc[mi];
    if (a.size() < static_cast<std::size_t>(k1)) a.resize(static_cast<std::size_t>(k1));
    Job job{&mb, &a, nullptr, identity ? nullptr : pv.data(),
            map_identity ? nullptr : maps[t].data()};
    if (mb.native && c.row_dots.size() == members_.size()) {
      std::vector<double>& d = c.row_dots[mi];
      if (d.size() < static_cast<std::size_t>(k1 * mb.n)) {
        d.resize(static_cast<std::size_t>(k1 * mb.n));
      }
      job.dots = d.data();
      job.own = pv.data();  // native_term always gathers through the permutation
    }
    jobs.push_back(job);
  }
  // Items (job, pair), balanced over threads by their floats: the final objective of a large
  // gradient matching (Conv8, K = 30: 1.2 GB of pairs) is a float64 pass over the whole store.
  const std::int64_t per_job = k1 - k0;
  if (per_job <= 0) return;
  parallel::run_items<std::vector<float>>(
      static_cast<std::int64_t>(jobs.size()) * per_job,
      [&](std::int64_t it) {
        const Member& mb = *jobs[static_cast<std::size_t>(it / per_job)].mb;
        return mb.m * mb.n;
      },
      [&](std::int64_t it, std::vector<float>& row) {
        const Job& job = jobs[static_cast<std::size_t>(it / per_job)];
        const std::int64_t k = k0 + it % per_job;
        (*job.acc)[static_cast<std::size_t>(k)] =
            job.dots != nullptr
                ? native_term(*job.mb, k, job.own, job.dots + k * job.mb->n, nullptr)
                : pair_term(*job.mb, k, job.own, job.map, row);
      });
}

void Matcher::retarget_cache(ObjectiveCache& c,
                             const std::vector<std::vector<std::int64_t>>& perms) {
  // Move the cache's terms from c.perms to `perms`: a member none of whose groups changed keeps
  // its terms; a native member re-reads only its rows whose source row changed; any other
  // affected member is recomputed over the cached pairs.
  std::vector<std::int64_t> rows;
  std::vector<std::size_t> full;
  for (std::size_t mi = 0; mi < members_.size(); ++mi) {
    const Member& mb = members_[mi];
    if (!mb.primary) continue;
    const std::size_t g = static_cast<std::size_t>(mb.group);
    bool others_changed = false;
    for (const OtherAxis& ax : mb.others) {
      if (ax.group >= 0) {
        others_changed = others_changed || c.perms[static_cast<std::size_t>(ax.group)] !=
                                               perms[static_cast<std::size_t>(ax.group)];
      }
    }
    const bool own_changed = c.perms[g] != perms[g];
    if (!own_changed && !others_changed) continue;
    if (mb.native) {  // static: no other permuted axis
      rows.clear();
      for (std::int64_t i = 0; i < mb.n; ++i) {
        if (c.perms[g][static_cast<std::size_t>(i)] != perms[g][static_cast<std::size_t>(i)]) {
          rows.push_back(i);
        }
      }
      for (std::int64_t k = 0; k < c.upto; ++k) {
        c.acc[mi][static_cast<std::size_t>(k)] = native_term(
            mb, k, perms[g].data(), c.row_dots[mi].data() + k * mb.n, &rows);
      }
      continue;
    }
    full.push_back(mi);
  }
  c.perms = perms;
  extend_members(c, full, 0, c.upto);
}

double Matcher::objective_cached(const std::vector<std::vector<std::int64_t>>& perms) {
  if (perms == identity_cache_.perms) return sum_terms(identity_cache_.acc);  // kept by add()
  if (!last_cache_.valid) {
    last_cache_.perms = perms;
    last_cache_.acc.assign(members_.size(), {});
    last_cache_.row_dots.assign(members_.size(), {});
    last_cache_.upto = 0;
    last_cache_.valid = true;
  } else if (last_cache_.perms != perms) {
    retarget_cache(last_cache_, perms);
  }
  extend_cache(last_cache_);  // reads only the pairs added since the cache was last extended
  return sum_terms(last_cache_.acc);
}

double Matcher::objective_locked(const std::vector<std::vector<std::int64_t>>& perms) {
  // Uncached (public objective() at arbitrary perms must not evict the solve's cache), except
  // at the identity, whose terms add() computed in its own summation order.
  if (perms == identity_cache_.perms) return sum_terms(identity_cache_.acc);
  ObjectiveCache c;
  c.perms = perms;
  c.acc.assign(members_.size(), {});
  extend_cache(c);
  return sum_terms(c.acc);
}

Error Matcher::solve(const std::int64_t* const* init, bool use_previous, const SolveOptions& opts,
                     SolveResult& out) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto t_start = Clock::now();
  if (opts.max_sweeps < 0 || !(opts.tol >= 0.0)) return {Status::bad_argument, -1, -1};
  if (num_pairs_ == 0) return {Status::no_pairs, -1, -1};
  const std::size_t G = groups_.size();
  // Starting permutations: validated copies (never aliases of the caller's arrays).
  std::vector<char> seen;
  if (init != nullptr) {
    for (std::size_t g = 0; g < G; ++g) {
      if (!is_permutation(init[g], groups_[g].n, seen)) {
        return {Status::bad_init, static_cast<std::int64_t>(g), -1};
      }
    }
  }
  for (std::size_t g = 0; g < G; ++g) {
    Group& gr = groups_[g];
    std::vector<std::int64_t> start(static_cast<std::size_t>(gr.n));
    if (init != nullptr) {
      std::copy(init[g], init[g] + gr.n, start.begin());
    } else if (use_previous) {
      start = gr.perm;
    } else {
      std::iota(start.begin(), start.end(), std::int64_t{0});
    }
    if (start != gr.perm) {
      gr.perm.swap(start);
      ++gr.version;
    }
    if (!opts.warm_duals) gr.has_duals = false;
  }
  out = SolveResult{};
  if (opts.greedy_start) {
    const Error e = greedy_pass(out);
    if (!e.ok()) return e;
  }
  for (std::size_t g = 0; g < G; ++g) perms_view_[g] = groups_[g].perm;

  out.time_static_gemm = static_gemm_time_;
  out.static_gemm_flops = static_gemm_flops_;
  static_gemm_time_ = 0.0;
  static_gemm_flops_ = 0.0;
  double obj = objective_cached(perms_view_);
  out.history.push_back(obj);
  std::vector<char> dirty(G, 1);
  std::vector<float> cost, new_duals;
  std::vector<std::int64_t> cols;
  PyRandom rng(opts.seed);
  std::vector<int> order(G);
  for (int sweep = 0; sweep < opts.max_sweeps; ++sweep) {
    std::iota(order.begin(), order.end(), 0);
    rng.shuffle(order);
    double gain = 0.0;
    for (int gi : order) {
      Group& gr = groups_[static_cast<std::size_t>(gi)];
      // Exact skip: nothing this group's cost depends on changed since its last solve, so the
      // same LAP would return the same permutation.
      if (!dirty[static_cast<std::size_t>(gi)]) continue;
      const float* cp = build_cost(gr, cost, out);
      const std::int64_t n = gr.n;
      if (!solve_group(static_cast<std::size_t>(gi), cp, cols, new_duals, out)) {
        return {last_lap_interrupted_ ? Status::interrupted : Status::lap_failed, gi, -1};
      }
      // Between visits every permutation is a valid one: a stop here leaves the matcher usable.
      if (lap::interrupt_requested()) return {Status::interrupted, gi, -1};
      dirty[static_cast<std::size_t>(gi)] = 0;
      double before = 0.0, after = 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        before += cp[static_cast<std::size_t>(i * n + gr.perm[static_cast<std::size_t>(i)])];
        after += cp[static_cast<std::size_t>(i * n + cols[static_cast<std::size_t>(i)])];
      }
      // Keep the old permutation unless the new one is strictly better in float64: a change on
      // a tie gains nothing, and could end the descent (a sweep without gain) right after it
      // moved a group whose neighbours then were never revisited, short of a coordinate-wise
      // optimum. (Also guards against a float32 rounding tie lowering the objective.)
      if (cols == gr.perm) ++out.lap_unchanged;
      if (cols != gr.perm && after > before) {
        gr.perm = cols;
        perms_view_[static_cast<std::size_t>(gi)] = cols;
        ++gr.version;
        for (int nb : gr.neighbours) dirty[static_cast<std::size_t>(nb)] = 1;
        gain += after - before;
        obj += after - before;
      }
    }
    out.sweeps = sweep + 1;
    out.history.push_back(obj);
    if (gain <= opts.tol * std::max(1.0, std::fabs(obj))) {
      out.converged = true;
      break;
    }
  }
  out.perms = perms_view_;
  // The tracked value sums float64 differences of float32 cost entries on top of an exact start;
  // callers that only log it (transfer loops) skip the exact pass over every stored pair.
  out.objective = opts.exact_objective ? objective_cached(perms_view_) : obj;
  out.time_total = seconds_since(t_start);
  return {};
}

int set_blas_threads(int num_threads) {
  if (num_threads > 0) parallel::threads_setting().store(num_threads);
  return parallel::threads();
}

}  // namespace trajtransfer::match

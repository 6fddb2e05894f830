// Coordinate-descent driver, pair store and cost-matrix builder (see matcher.hpp).
#include "match/matcher.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
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
  const std::size_t T = mt->tensors_.size();
  mt->factors_.resize(T);
  mt->dense_pairs_.resize(T);
  mt->slot_.resize(T);
  for (std::size_t t = 0; t < T; ++t) {
    const TensorSpec& ts = mt->tensors_[t];
    FactorStore& fs = mt->factors_[t];
    fs.allowed = ts.shape.size() >= 2;
    for (std::size_t a = 2; a < ts.shape.size(); ++a) {
      fs.allowed = fs.allowed && ts.shape[a] == 1 && ts.groups[a] < 0;
    }
    if (!fs.allowed) continue;
    fs.n_out = ts.shape[0];
    fs.n_in = product(ts.shape, 1, ts.shape.size());
  }
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
  const std::size_t T = tensors_.size();
  std::vector<TensorInput> tin(T), sin(T);
  for (std::size_t t = 0; t < T; ++t) {
    tin[t].dense = targets[t];
    sin[t].dense = sources[t];
  }
  return add(tin.data(), sin.data(), weight);
}

namespace {

bool all_finite(const float* x, std::int64_t count) {
  // Summing x * 0 keeps finite values at 0 and turns inf and NaN into NaN: a branch-free pass,
  // with eight partial sums that the compiler can vectorise (as in dot_f64).
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    for (int u = 0; u < 8; ++u) part[u] += x[i + u] * 0.0f;
  }
  float acc = 0.0f;
  for (; i < count; ++i) acc += x[i] * 0.0f;
  for (const float p : part) acc += p;
  return acc == 0.0f;
}

/// Rows [r0, r1) of a row-major (rows, w) matrix, columns gathered through p (null: as is), as
/// float64 into out (r1 - r0, w).
void gather_f64(const float* x, std::int64_t w, std::int64_t r0, std::int64_t r1,
                const std::int64_t* p, double* out) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* row = x + r * w;
    double* o = out + (r - r0) * w;
    if (p == nullptr) {
      for (std::int64_t i = 0; i < w; ++i) o[i] = row[i];
    } else {
      for (std::int64_t i = 0; i < w; ++i) o[i] = row[p[i]];
    }
  }
}

/// Exact float64 <dt^T at, pi(ds^T as)> = sum (dt pi_out(ds)^T) . (at pi_in(as)^T), where
/// pi(G)[i, c] = G[p_out[i], p_in[c]] (null: identity).
double factor_dot(const float* dt, const float* at, std::int64_t rt, const float* ds,
                  const float* as, std::int64_t rs, std::int64_t n_out, std::int64_t n_in,
                  const std::int64_t* p_out, const std::int64_t* p_in) {
  if (rt == 0 || rs == 0) return 0.0;
  std::vector<double> x(static_cast<std::size_t>(rt * std::max(n_out, n_in)));
  std::vector<double> y(static_cast<std::size_t>(rs * std::max(n_out, n_in)));
  std::vector<double> gd(static_cast<std::size_t>(rt * rs)), ga(gd.size());
  const int it = static_cast<int>(rt), is = static_cast<int>(rs);
  gather_f64(dt, n_out, 0, rt, nullptr, x.data());
  gather_f64(ds, n_out, 0, rs, p_out, y.data());
  blas::dgemm_rm(false, true, it, is, static_cast<int>(n_out), 1.0, x.data(),
                 static_cast<int>(n_out), y.data(), static_cast<int>(n_out), 0.0, gd.data(), is);
  gather_f64(at, n_in, 0, rt, nullptr, x.data());
  gather_f64(as, n_in, 0, rs, p_in, y.data());
  blas::dgemm_rm(false, true, it, is, static_cast<int>(n_in), 1.0, x.data(),
                 static_cast<int>(n_in), y.data(), static_cast<int>(n_in), 0.0, ga.data(), is);
  double acc = 0.0;
  for (std::size_t i = 0; i < gd.size(); ++i) acc += gd[i] * ga[i];
  return acc;
}

}  // namespace

Error Matcher::add(const TensorInput* targets, const TensorInput* sources, double weight) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!std::isfinite(weight)) return {Status::bad_argument, -1, -1};
  // Validate everything first so that a failure leaves the store untouched. The float64 dot
  // <target, source> that the exact objective needs at the identity doubles as the finiteness
  // check of dense tensors (products of finite floats cannot overflow a double, and any inf or
  // NaN operand makes the sum inf or NaN), saving a pass over the pair. Factors are checked
  // explicitly: their dot goes through BLAS.
  const std::size_t T = tensors_.size();
  std::vector<char> factored(T, 0);
  for (std::size_t t = 0; t < T; ++t) {
    const bool ft = targets[t].dense == nullptr, fsrc = sources[t].dense == nullptr;
    if (ft != fsrc) return {Status::bad_factors, static_cast<std::int64_t>(t), -1};
    if (!ft) continue;
    const TensorInput& x = targets[t];
    const TensorInput& y = sources[t];
    if (!factors_[t].allowed || x.rows < 0 || y.rows < 0 ||
        ((x.delta == nullptr || x.inputs == nullptr) && x.rows > 0) ||
        ((y.delta == nullptr || y.inputs == nullptr) && y.rows > 0)) {
      return {Status::bad_factors, static_cast<std::int64_t>(t), -1};
    }
    factored[t] = 1;
  }
  std::vector<double>& raw_dot = add_dots_;
  raw_dot.assign(T, 0.0);
  const auto work = [&](std::int64_t t) {
    const TensorInput& x = targets[t];
    if (x.dense != nullptr) {
      const TensorSpec& ts = tensors_[static_cast<std::size_t>(t)];
      return product(ts.shape, 0, ts.shape.size());
    }
    const FactorStore& fs = factors_[static_cast<std::size_t>(t)];
    return (x.rows + sources[t].rows) * (fs.n_out + fs.n_in) * 8;
  };
  parallel::run_items<char>(static_cast<std::int64_t>(T), work, [&](std::int64_t t, char&) {
    const TensorInput& x = targets[t];
    const TensorInput& y = sources[t];
    if (x.dense != nullptr) {
      raw_dot[static_cast<std::size_t>(t)] = dot_f64(x.dense, y.dense, work(t));
      return;
    }
    const FactorStore& fs = factors_[static_cast<std::size_t>(t)];
    const bool finite = all_finite(x.delta, x.rows * fs.n_out) &&
                        all_finite(x.inputs, x.rows * fs.n_in) &&
                        all_finite(y.delta, y.rows * fs.n_out) &&
                        all_finite(y.inputs, y.rows * fs.n_in);
    raw_dot[static_cast<std::size_t>(t)] =
        finite ? factor_dot(x.delta, x.inputs, x.rows, y.delta, y.inputs, y.rows, fs.n_out,
                            fs.n_in, nullptr, nullptr)
               : std::numeric_limits<double>::quiet_NaN();
  });
  for (std::size_t t = 0; t < T; ++t) {
    if (!std::isfinite(raw_dot[t])) return {Status::non_finite, static_cast<std::int64_t>(t), -1};
  }
  const float alpha = static_cast<float>(weight);
  const std::int64_t k_new = num_pairs_;
  weights_.push_back(weight);
  for (std::size_t t = 0; t < T; ++t) {
    if (primary_of_[t] < 0) constant_ += weight * raw_dot[t];
    if (factored[t]) {
      FactorStore& fs = factors_[t];
      const TensorInput& x = targets[t];
      const TensorInput& y = sources[t];
      const auto append = [](FloatStore& st, const float* p, std::int64_t count) {
        const std::size_t old = st.size();
        st.resize(old + static_cast<std::size_t>(count));
        if (count > 0) copy_floats(p, count, st.data() + old);
      };
      append(fs.dt, x.delta, x.rows * fs.n_out);
      append(fs.at, x.inputs, x.rows * fs.n_in);
      append(fs.ds, y.delta, y.rows * fs.n_out);
      append(fs.as, y.inputs, y.rows * fs.n_in);
      slot_[t].push_back(-1 - static_cast<std::int64_t>(fs.pair.size()));
      fs.pair.push_back(k_new);
      fs.off_t.push_back(fs.off_t.back() + x.rows);
      fs.off_s.push_back(fs.off_s.back() + y.rows);
      fs.max_rows_t = std::max(fs.max_rows_t, x.rows);
    } else {
      slot_[t].push_back(static_cast<std::int64_t>(dense_pairs_[t].size()));
      dense_pairs_[t].push_back(k_new);
    }
  }
  // A group with a factored static term in this pair gets its factored and rows-layout dense
  // static terms in one GEMM (fused_static_add): the (n, n) matrix is then read and written
  // once, where on a 4096-unit group each pass over it costs about as much as the products.
  std::vector<char> fuse(groups_.size(), 0);
  for (const Member& mb : members_) {
    if (mb.is_static && factored[static_cast<std::size_t>(mb.tensor)]) {
      fuse[static_cast<std::size_t>(mb.group)] = 1;
    }
  }
  for (Member& mb : members_) {
    if (mb.kind == Kind::cols) continue;  // reads its owner's store
    if (!factored[static_cast<std::size_t>(mb.tensor)]) {
      const TensorInput* tg = targets;
      const TensorInput* sc = sources;
      const std::size_t block = static_cast<std::size_t>(mb.m * mb.n);
      const std::size_t old = mb.target.size();
      mb.target.resize(old + block);
      mb.source.resize(old + block);
      if (stored_as_given(mb)) {  // native (n, post), or rows with post == 1: a plain copy
        copy_floats(tg[mb.tensor].dense, static_cast<std::int64_t>(block), mb.target.data() + old);
        copy_floats(sc[mb.tensor].dense, static_cast<std::int64_t>(block), mb.source.data() + old);
      } else {
        unfold_rows(tg[mb.tensor].dense, mb.pre, mb.n, mb.post, mb.target.data() + old);
        unfold_rows(sc[mb.tensor].dense, mb.pre, mb.n, mb.post, mb.source.data() + old);
      }
      if (mb.is_static && mb.m > 0 &&
          (mb.native || !fuse[static_cast<std::size_t>(mb.group)])) {
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
    }
    if (mb.primary) {
      // The pair's exact term at the identity: an identity-start solve then needs no pass over
      // the stored pairs for history[0]. (Summed in the input's order: objective() at the
      // identity reads this cache too, so every exact value at the identity agrees bitwise.)
      identity_cache_.acc[static_cast<std::size_t>(&mb - members_.data())].push_back(
          raw_dot[static_cast<std::size_t>(mb.tensor)]);
    }
  }
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    if (!fuse[g]) continue;
    const auto t0 = Clock::now();
    static_gemm_flops_ += fused_static_add(g, alpha, factored);
    static_gemm_time_ += seconds_since(t0);
  }
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
      static_gemm_flops_ += accumulate_rows(mb, num_pairs_ - 1, false, other_perm(mb, true));
    }
  }
  static_gemm_time_ += seconds_since(t0);
  return {};
}

std::int64_t Matcher::dense_slot_from(int t, std::int64_t k0) const {
  const auto& dp = dense_pairs_[static_cast<std::size_t>(t)];
  return static_cast<std::int64_t>(std::lower_bound(dp.begin(), dp.end(), k0) - dp.begin());
}

double Matcher::dense_weight(int t, std::int64_t slot) const {
  const auto& dp = dense_pairs_[static_cast<std::size_t>(t)];
  return weights_[static_cast<std::size_t>(dp[static_cast<std::size_t>(slot)])];
}

std::int64_t Matcher::factor_entry_from(int t, std::int64_t k0) const {
  const auto& ps = factors_[static_cast<std::size_t>(t)].pair;
  return static_cast<std::int64_t>(std::lower_bound(ps.begin(), ps.end(), k0) - ps.begin());
}

const std::int64_t* Matcher::other_perm(const Member& mb, bool seen) const {
  const FactorStore& fs = factors_[static_cast<std::size_t>(mb.tensor)];
  if (!fs.allowed || fs.pair.empty()) return nullptr;
  // A factored tensor's other permuted axis is axis 1 - mb.axis, the first of `others`.
  const int g = mb.others[0].group;
  if (g < 0) return nullptr;
  return seen ? mb.seen_perms[0].data() : groups_[static_cast<std::size_t>(g)].perm.data();
}

bool Matcher::correction_pays(const Member& mb, std::size_t c) const {
  const std::size_t t = static_cast<std::size_t>(mb.tensor);
  if (!dense_pairs_[t].empty() || factors_[t].pair.empty()) return true;
  return static_cast<std::int64_t>(c) <= factors_[t].max_rows_t;
}

double Matcher::factored_term(int t, std::int64_t e, const std::int64_t* p_out,
                              const std::int64_t* p_in) const {
  const FactorStore& fs = factors_[static_cast<std::size_t>(t)];
  const std::int64_t t0 = fs.off_t[static_cast<std::size_t>(e)];
  const std::int64_t t1 = fs.off_t[static_cast<std::size_t>(e) + 1];
  const std::int64_t s0 = fs.off_s[static_cast<std::size_t>(e)];
  const std::int64_t s1 = fs.off_s[static_cast<std::size_t>(e) + 1];
  return factor_dot(fs.dt.data() + t0 * fs.n_out, fs.at.data() + t0 * fs.n_in, t1 - t0,
                    fs.ds.data() + s0 * fs.n_out, fs.as.data() + s0 * fs.n_in, s1 - s0, fs.n_out,
                    fs.n_in, p_out, p_in);
}

double Matcher::member_factored_term(const Member& mb, std::int64_t e, const std::int64_t* own,
                                     const std::int64_t* other) const {
  return mb.axis == 0 ? factored_term(mb.tensor, e, own, other)
                      : factored_term(mb.tensor, e, other, own);
}

void Matcher::factored_products(const Member& mb, std::int64_t e, const std::int64_t* q,
                                float* y, std::vector<float>& g, std::vector<float>& m) const {
  const FactorStore& fs = factors_[static_cast<std::size_t>(mb.tensor)];
  const bool out_axis = mb.axis == 0;
  const std::int64_t n = mb.n, ni = out_axis ? fs.n_in : fs.n_out;
  const float* inner_t = out_axis ? fs.at.data() : fs.dt.data();
  const float* own_s = out_axis ? fs.ds.data() : fs.as.data();
  const float* inner_s = out_axis ? fs.as.data() : fs.ds.data();
  const std::size_t es = static_cast<std::size_t>(e);
  const std::int64_t t0 = fs.off_t[es], rt = fs.off_t[es + 1] - t0;
  const std::int64_t s0 = fs.off_s[es], rs = fs.off_s[es + 1] - s0;
  if (rt == 0) return;
  if (rs == 0) {
    std::fill(y, y + rt * n, 0.0f);
    return;
  }
  const float* is = inner_s + s0 * ni;
  if (q != nullptr) {
    g.resize(static_cast<std::size_t>(rs * ni));
    for (std::int64_t r = 0; r < rs; ++r) {
      const float* src = is + r * ni;
      float* dst = g.data() + r * ni;
      for (std::int64_t c = 0; c < ni; ++c) dst[c] = src[q[c]];
    }
    is = g.data();
  }
  m.resize(static_cast<std::size_t>(rt * rs));
  const int irt = static_cast<int>(rt), irs = static_cast<int>(rs);
  blas::sgemm_rm(false, true, irt, irs, static_cast<int>(ni), 1.0f, inner_t + t0 * ni,
                 static_cast<int>(ni), is, static_cast<int>(ni), 0.0f, m.data(), irs);
  const float w = static_cast<float>(weights_[static_cast<std::size_t>(fs.pair[es])]);
  blas::sgemm_rm(false, false, irt, static_cast<int>(n), irs, w, m.data(), irs, own_s + s0 * n,
                 static_cast<int>(n), 0.0f, y, static_cast<int>(n));
}

double Matcher::fused_static_add(std::size_t gi, float alpha, const std::vector<char>& factored) {
  // The new pair's static terms of group gi as one C += T^T S: the factored members' own_t
  // rows with their products Y, the rows-layout dense members' rows with w S.
  Group& gr = groups_[gi];
  const std::int64_t n = gr.n;
  std::int64_t rows = 0;
  for (int mi : gr.members) {
    const Member& mb = members_[static_cast<std::size_t>(mi)];
    if (!mb.is_static) continue;
    const FactorStore& fs = factors_[static_cast<std::size_t>(mb.tensor)];
    if (factored[static_cast<std::size_t>(mb.tensor)]) {
      rows += fs.off_t.back() - fs.off_t[fs.off_t.size() - 2];
    } else if (!mb.native) {
      rows += mb.m;
    }
  }
  if (rows == 0) return 0.0;
  scratch_t_.resize(static_cast<std::size_t>(rows * n));
  scratch_.resize(static_cast<std::size_t>(rows * n));
  std::vector<float> g, m;
  double small = 0.0;
  std::int64_t l = 0;
  for (int mi : gr.members) {
    const Member& mb = members_[static_cast<std::size_t>(mi)];
    if (!mb.is_static) continue;
    float* lt = scratch_t_.data() + l * n;
    float* ls = scratch_.data() + l * n;
    if (factored[static_cast<std::size_t>(mb.tensor)]) {
      const FactorStore& fs = factors_[static_cast<std::size_t>(mb.tensor)];
      const std::int64_t e = static_cast<std::int64_t>(fs.pair.size()) - 1;
      const std::int64_t t0 = fs.off_t[static_cast<std::size_t>(e)];
      const std::int64_t rt = fs.off_t.back() - t0;
      const std::int64_t rs = fs.off_s.back() - fs.off_s[static_cast<std::size_t>(e)];
      const float* own_t = (mb.axis == 0 ? fs.dt.data() : fs.at.data()) + t0 * n;
      std::copy(own_t, own_t + rt * n, lt);
      factored_products(mb, e, nullptr, ls, g, m);
      small += 2.0 * static_cast<double>(rt * rs) *
               static_cast<double>(n + (mb.axis == 0 ? fs.n_in : fs.n_out));
      l += rt;
    } else if (!mb.native) {
      const std::size_t block = static_cast<std::size_t>(mb.m * mb.n);
      const float* t = mb.target.data() + (mb.target.size() - block);
      const float* src = mb.source.data() + (mb.source.size() - block);
      std::copy(t, t + block, lt);
      for (std::size_t i = 0; i < block; ++i) ls[i] = alpha * src[i];
      l += mb.m;
    }
  }
  blas::sgemm_tn_rows(static_cast<int>(n), static_cast<int>(rows), 1.0f, scratch_t_.data(),
                      scratch_.data(), 1.0f, gr.static_cost.data());
  return small + gemm_flops(n, rows);
}

double Matcher::accumulate_factored(const Member& mb, std::int64_t e0, const std::int64_t* q,
                                    float* out) {
  // Per entry: M = inner_t pi(inner_s)^T (rows_t x rows_s), Y = w M own_s (rows_t x n); then
  // out += own_t^T Y as one GEMM over the entries' rows (own_t's rows are contiguous).
  const FactorStore& fs = factors_[static_cast<std::size_t>(mb.tensor)];
  const std::int64_t E = static_cast<std::int64_t>(fs.pair.size());
  if (e0 >= E) return 0.0;
  const bool out_axis = mb.axis == 0;
  const std::int64_t n = mb.n, ni = out_axis ? fs.n_in : fs.n_out;
  const float* own_t = out_axis ? fs.dt.data() : fs.at.data();
  double flops = 0.0;
  const std::int64_t cap = std::max<std::int64_t>(kChunkFloats / std::max<std::int64_t>(n, 1), 1);
  for (std::int64_t c0 = e0; c0 < E;) {
    // Entries [c0, c1): at least one, at most kChunkFloats of Y.
    std::int64_t c1 = c0 + 1;
    while (c1 < E && fs.off_t[static_cast<std::size_t>(c1) + 1] -
                             fs.off_t[static_cast<std::size_t>(c0)] <= cap) {
      ++c1;
    }
    const std::int64_t r0 = fs.off_t[static_cast<std::size_t>(c0)];
    const std::int64_t rows = fs.off_t[static_cast<std::size_t>(c1)] - r0;
    double small = 0.0;
    for (std::int64_t e = c0; e < c1; ++e) {
      const double rt = static_cast<double>(fs.off_t[e + 1] - fs.off_t[e]);
      const double rs = static_cast<double>(fs.off_s[e + 1] - fs.off_s[e]);
      small += 2.0 * rt * rs * static_cast<double>(ni + n);
    }
    scratch_.resize(static_cast<std::size_t>(rows * n));
    float* y = scratch_.data();
    // The entries' small products, split over threads by entry when they are large enough.
    const int parts = small >= blas::kParallelFlops
                          ? static_cast<int>(std::min<std::int64_t>(parallel::threads(), c1 - c0))
                          : 1;
    parallel::run_parts(c1 - c0, parts, [&](std::int64_t i0, std::int64_t i1) {
      std::vector<float> g, m;
      for (std::int64_t e = c0 + i0; e < c0 + i1; ++e) {
        factored_products(mb, e, q, y + (fs.off_t[static_cast<std::size_t>(e)] - r0) * n, g, m);
      }
    });
    if (rows > 0) {
      blas::sgemm_tn_rows(static_cast<int>(n), static_cast<int>(rows), 1.0f, own_t + r0 * n, y,
                          1.0f, out);
    }
    flops += small + gemm_flops(n, rows);
    c0 = c1;
  }
  return flops;
}

double Matcher::correct_factored(const Member& mb, const std::int64_t* q_new,
                                 const std::int64_t* q_old, float* out) {
  // Per entry the moved slices made dense: L = inner_t[:, changed]^T own_t and
  // R = w (inner_s[:, q_new] - inner_s[:, q_old])^T own_s (c x n each); out += L^T R over the
  // entries' stacked rows, as a dense pair's correction.
  const FactorStore& fs = factors_[static_cast<std::size_t>(mb.tensor)];
  const std::int64_t E = static_cast<std::int64_t>(fs.pair.size());
  const std::int64_t c = static_cast<std::int64_t>(changed_.size());
  if (E == 0 || c == 0) return 0.0;
  const bool out_axis = mb.axis == 0;
  const std::int64_t n = mb.n, ni = out_axis ? fs.n_in : fs.n_out;
  const float* own_t = out_axis ? fs.dt.data() : fs.at.data();
  const float* inner_t = out_axis ? fs.at.data() : fs.dt.data();
  const float* own_s = out_axis ? fs.ds.data() : fs.as.data();
  const float* inner_s = out_axis ? fs.as.data() : fs.ds.data();
  const std::int64_t per =
      std::max<std::int64_t>(kChunkFloats / std::max<std::int64_t>(c * n, 1), 1);
  double flops = 0.0;
  for (std::int64_t c0 = 0; c0 < E; c0 += per) {
    const std::int64_t c1 = std::min(E, c0 + per);
    const std::size_t size = static_cast<std::size_t>((c1 - c0) * c * n);
    scratch_.resize(size);
    scratch_t_.resize(size);
    double small = 0.0;
    for (std::int64_t e = c0; e < c1; ++e) {
      small += 2.0 * static_cast<double>(c * n) *
               static_cast<double>(fs.off_t[e + 1] - fs.off_t[e] + fs.off_s[e + 1] - fs.off_s[e]);
    }
    const int parts = small >= blas::kParallelFlops
                          ? static_cast<int>(std::min<std::int64_t>(parallel::threads(), c1 - c0))
                          : 1;
    parallel::run_parts(c1 - c0, parts, [&](std::int64_t i0, std::int64_t i1) {
      std::vector<float> g;
      for (std::int64_t e = c0 + i0; e < c0 + i1; ++e) {
        const std::size_t es = static_cast<std::size_t>(e);
        const std::int64_t t0 = fs.off_t[es], rt = fs.off_t[es + 1] - t0;
        const std::int64_t s0 = fs.off_s[es], rs = fs.off_s[es + 1] - s0;
        float* lt = scratch_t_.data() + (e - c0) * c * n;
        float* ls = scratch_.data() + (e - c0) * c * n;
        const int ic = static_cast<int>(c), in = static_cast<int>(n);
        g.resize(static_cast<std::size_t>(std::max(rt, rs) * c));
        for (std::int64_t r = 0; r < rt; ++r) {
          const float* src = inner_t + (t0 + r) * ni;
          for (std::int64_t j = 0; j < c; ++j) g[r * c + j] = src[changed_[j]];
        }
        if (rt == 0) {
          std::fill(lt, lt + c * n, 0.0f);
        } else {
          blas::sgemm_rm(true, false, ic, in, static_cast<int>(rt), 1.0f, g.data(), ic,
                         own_t + t0 * n, in, 0.0f, lt, in);
        }
        for (std::int64_t r = 0; r < rs; ++r) {
          const float* src = inner_s + (s0 + r) * ni;
          for (std::int64_t j = 0; j < c; ++j) {
            const std::int64_t i = changed_[j];
            g[r * c + j] = src[q_new[i]] - src[q_old[i]];
          }
        }
        if (rs == 0) {
          std::fill(ls, ls + c * n, 0.0f);
        } else {
          const float w = static_cast<float>(weights_[static_cast<std::size_t>(fs.pair[es])]);
          blas::sgemm_rm(true, false, ic, in, static_cast<int>(rs), w, g.data(), ic,
                         own_s + s0 * n, in, 0.0f, ls, in);
        }
      }
    });
    const std::int64_t rows = (c1 - c0) * c;
    blas::sgemm_tn_rows(static_cast<int>(n), static_cast<int>(rows), 1.0f, scratch_t_.data(),
                        scratch_.data(), 1.0f, out);
    flops += small + gemm_flops(n, rows);
  }
  return flops;
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
    // A tensor whose pairs so far all came as factors gets its dense store when it needs one.
    const std::size_t t = static_cast<std::size_t>(mb.tensor);
    if (num_pairs_ > 0 && dense_pairs_[t].empty()) continue;
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
  for (FactorStore& fs : factors_) {  // as many rows per pair as the last factored one
    if (fs.pair.empty()) continue;
    const std::size_t e = fs.pair.size() - 1;
    const std::size_t rt = static_cast<std::size_t>(fs.off_t[e + 1] - fs.off_t[e]);
    const std::size_t rs = static_cast<std::size_t>(fs.off_s[e + 1] - fs.off_s[e]);
    fs.dt.reserve(k * rt * static_cast<std::size_t>(fs.n_out));
    fs.at.reserve(k * rt * static_cast<std::size_t>(fs.n_in));
    fs.ds.reserve(k * rs * static_cast<std::size_t>(fs.n_out));
    fs.as.reserve(k * rs * static_cast<std::size_t>(fs.n_in));
  }
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
  for (FactorStore& fs : factors_) {
    fs.dt.clear();
    fs.at.clear();
    fs.ds.clear();
    fs.as.clear();
    fs.pair.clear();
    fs.off_t.assign(1, 0);
    fs.off_s.assign(1, 0);
    fs.max_rows_t = 0;
  }
  for (auto& d : dense_pairs_) d.clear();
  for (auto& sl : slot_) sl.clear();
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
      if (collect_changed(q, mb.seen_perms[mb.cols_other], changed_) &&
          correction_pays(mb, changed_.size())) {
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
  const double factored = accumulate_factored(
      mb, factor_entry_from(mb.tensor, k0), q, mb.contrib.data());
  const auto& dense = dense_pairs_[static_cast<std::size_t>(mb.tensor)];
  const std::int64_t d0 = dense_slot_from(mb.tensor, k0);
  const std::int64_t D = static_cast<std::int64_t>(dense.size());
  if (W == 0 || d0 >= D) return factored;  // empty: BLAS would reject lda = 0
  scratch_.resize(static_cast<std::size_t>(n * W));
  for (std::int64_t k = d0; k < D; ++k) {  // k: the dense slot
    const float wf = static_cast<float>(dense_weight(mb.tensor, k));
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
  return factored + 2.0 * static_cast<double>(n) * static_cast<double>(n) *
                        static_cast<double>(W * mb.blocks * (D - d0));
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
  stats.gemm_flops += correct_factored(mb, q, q_old, mb.contrib.data());
  const auto& dense = dense_pairs_[static_cast<std::size_t>(mb.tensor)];
  const std::int64_t D = static_cast<std::int64_t>(dense.size());
  scratch_.resize(static_cast<std::size_t>(n * Wc));
  scratch_t_.resize(static_cast<std::size_t>(n * Wc));
  for (std::int64_t k = 0; k < D; ++k) {  // k: the dense slot
    const float wf = static_cast<float>(dense_weight(mb.tensor, k));
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
                      static_cast<double>(Wc * mb.blocks * D);
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
    if (collect_changed(row_map_, old_map_, changed_) && correction_pays(mb, changed_.size())) {
      if (!changed_.empty()) delta_build(mb, stats);
    } else {
      full_build(mb, stats);
    }
  } else {
    full_build(mb, stats);
  }
}

void Matcher::full_build(Member& mb, SolveResult& stats) {
  stats.gemm_flops += accumulate_rows(mb, 0, true, other_perm(mb, false));
  ++stats.member_builds;
}

double Matcher::accumulate_rows(Member& mb, std::int64_t k0, bool overwrite,
                                const std::int64_t* q) {
  // contrib (+)= sum over pairs k >= k0 of T_k^T G(w_k S_k), G = the rows reindex in row_map_
  // (dense pairs; l runs over their slots) or, for factored pairs, q on the other axis.
  const auto& dense = dense_pairs_[static_cast<std::size_t>(mb.tensor)];
  const std::int64_t n = mb.n, m = mb.m, l_begin = dense_slot_from(mb.tensor, k0) * m;
  const std::int64_t l_end = m * static_cast<std::int64_t>(dense.size());
  mb.contrib.resize(static_cast<std::size_t>(n * n));
  if (overwrite) std::fill(mb.contrib.begin(), mb.contrib.end(), 0.0f);
  const double factored =
      accumulate_factored(mb, factor_entry_from(mb.tensor, k0), q, mb.contrib.data());
  if (l_end <= l_begin) return factored;
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
        const double w = dense_weight(mb.tensor, k);
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
  return factored + 2.0 * static_cast<double>(n) * static_cast<double>(n) *
                        static_cast<double>(l_end - l_begin);
}

void Matcher::delta_build(Member& mb, SolveResult& stats) {
  // contrib += sum over changed rows r and pairs k of T[k, r]^T (w_k S[k, new(r)] - w_k S[k, old(r)])
  const std::int64_t n = mb.n, m = mb.m, c = static_cast<std::int64_t>(changed_.size());
  stats.gemm_flops += correct_factored(mb, other_perm(mb, false), other_perm(mb, true),
                                       mb.contrib.data());
  const auto& dense = dense_pairs_[static_cast<std::size_t>(mb.tensor)];
  const std::int64_t rows_total = c * static_cast<std::int64_t>(dense.size());
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
        const float wf = static_cast<float>(dense_weight(mb.tensor, k));
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
  // <T_k, pi(S_k)> of one primary member, float64, k its dense slot. p: the member's own group
  // permutation (null: identity); map: the rows reindex of the other axes (null: identity).
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
  // pair_term of a native member (k: its dense slot), keeping its row dots; with `only`,
  // recompute just those rows and reuse the others from `dots`. The sum runs in row order as
  // in pair_term: bit-identical.
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
    const std::int64_t* other;      // factored pairs: the other permuted axis (null: none)
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
    const FactorStore& fs = factors_[static_cast<std::size_t>(mb.tensor)];
    const int og = fs.allowed && !mb.others.empty() ? mb.others[0].group : -1;
    Job job{&mb, &a, nullptr, identity ? nullptr : pv.data(),
            map_identity ? nullptr : maps[t].data(),
            og >= 0 ? c.perms[static_cast<std::size_t>(og)].data() : nullptr};
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
        const std::int64_t slot =
            slot_[static_cast<std::size_t>(job.mb->tensor)][static_cast<std::size_t>(k)];
        (*job.acc)[static_cast<std::size_t>(k)] =
            slot < 0 ? member_factored_term(*job.mb, -1 - slot, job.own, job.other)
            : job.dots != nullptr
                ? native_term(*job.mb, slot, job.own, job.dots + k * job.mb->n, nullptr)
                : pair_term(*job.mb, slot, job.own, job.map, row);
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
        const std::int64_t slot =
            slot_[static_cast<std::size_t>(mb.tensor)][static_cast<std::size_t>(k)];
        c.acc[mi][static_cast<std::size_t>(k)] =
            slot < 0 ? member_factored_term(mb, -1 - slot, perms[g].data(), nullptr)
                     : native_term(mb, slot, perms[g].data(),
                                   c.row_dots[mi].data() + k * mb.n, &rows);
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

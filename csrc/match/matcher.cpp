// Coordinate-descent driver, pair store and cost-matrix builder (see matcher.hpp).
#include "match/matcher.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

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

bool all_finite(const float* x, std::int64_t count) {
  // inf and NaN are exactly the floats whose exponent bits are all ones; an integer OR-reduction
  // over that test vectorises (a float accumulation would be a serial dependency chain).
  std::uint32_t bad = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, sizeof(u));
    bad |= static_cast<std::uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
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

bool is_permutation(const std::int64_t* p, std::int64_t n, std::vector<char>& seen) {
  seen.assign(static_cast<std::size_t>(n), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    if (p[i] < 0 || p[i] >= n || seen[static_cast<std::size_t>(p[i])]) return false;
    seen[static_cast<std::size_t>(p[i])] = 1;
  }
  return true;
}

// Largest GEMM chunk (floats) of gathered source rows: bounds scratch memory at 16 MiB while
// keeping the inner dimension long enough for BLAS efficiency.
constexpr std::int64_t kChunkFloats = std::int64_t{1} << 22;

}  // namespace

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
  mt->tensors_ = std::move(tensors);
  mt->perms_view_.resize(mt->groups_.size());
  out = std::move(mt);
  return {};
}

Error Matcher::add(const float* const* targets, const float* const* sources, double weight) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!std::isfinite(weight)) return {Status::bad_argument, -1, -1};
  // Validate everything first so that a failure leaves the store untouched.
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    const std::int64_t count = product(tensors_[t].shape, 0, tensors_[t].shape.size());
    if (!all_finite(targets[t], count) || !all_finite(sources[t], count)) {
      return {Status::non_finite, static_cast<std::int64_t>(t), -1};
    }
  }
  const float alpha = static_cast<float>(weight);
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    bool permuted = false;
    for (int g : tensors_[t].groups) permuted = permuted || g >= 0;
    if (permuted) continue;
    // No permuted axis: a constant of the objective, kept exactly.
    const std::int64_t count = product(tensors_[t].shape, 0, tensors_[t].shape.size());
    double dot = 0.0;
    for (std::int64_t i = 0; i < count; ++i) {
      dot += static_cast<double>(targets[t][i]) * static_cast<double>(sources[t][i]);
    }
    constant_ += weight * dot;
  }
  for (Member& mb : members_) {
    if (mb.kind == Kind::cols) continue;  // reads its owner's store
    const std::size_t block = static_cast<std::size_t>(mb.m * mb.n);
    const std::size_t old = mb.target.size();
    mb.target.resize(old + block);
    mb.source.resize(old + block);
    unfold_rows(targets[mb.tensor], mb.pre, mb.n, mb.post, mb.target.data() + old);
    unfold_rows(sources[mb.tensor], mb.pre, mb.n, mb.post, mb.source.data() + old);
    if (mb.is_static && mb.m > 0) {
      // Static term: independent of every other permutation, so accumulate it once, here.
      const auto t0 = Clock::now();
      Group& g = groups_[static_cast<std::size_t>(mb.group)];
      blas::sgemm_tn_rows(static_cast<int>(mb.n), static_cast<int>(mb.m), alpha,
                          mb.target.data() + old, mb.source.data() + old, 1.0f,
                          g.static_cost.data());
      static_gemm_time_ += seconds_since(t0);
    }
  }
  weights_.push_back(weight);
  ++num_pairs_;
  // Dynamic terms are linear in the pairs: a term that is up to date for its recorded
  // permutations stays so after adding this pair's share at those same permutations (FGMT's
  // warm-started solves then only correct for the rows whose permutation changed).
  const auto t0 = Clock::now();
  for (Member& mb : members_) {
    if (mb.is_static || !mb.contrib_valid) continue;
    if (mb.kind == Kind::cols) {
      accumulate_cols(mb, num_pairs_ - 1, mb.seen_perms[mb.cols_other].data(), false);
    } else {
      std::vector<const std::int64_t*> seen(mb.others.size(), nullptr);
      for (std::size_t j = 0; j < mb.others.size(); ++j) {
        if (mb.others[j].group >= 0) seen[j] = mb.seen_perms[j].data();
      }
      build_row_map(mb.others, seen, row_map_);
      accumulate_rows(mb, num_pairs_ - 1, false);
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
  for (Member& mb : members_) {
    if (mb.kind == Kind::cols) continue;
    const std::size_t want = static_cast<std::size_t>(std::max<std::int64_t>(pairs, 0) * mb.m * mb.n);
    mb.target.reserve(want);
    mb.source.reserve(want);
  }
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
      const std::vector<std::int64_t>& q_old = mb.seen_perms[mb.cols_other];
      changed_.clear();
      for (std::size_t j = 0; j < q.size(); ++j) {
        if (q[j] != q_old[j]) changed_.push_back(static_cast<std::int64_t>(j));
      }
      if (2 * static_cast<std::int64_t>(changed_.size()) <= mb.seg_len) {
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
      for (std::int64_t i = 0; i < n * segs; ++i) {
        const float* s_seg = src + i * nb;
        float* d_seg = scratch_.data() + i * nb;
        for (std::int64_t j = 0; j < nb; ++j) d_seg[j] = wf * s_seg[q[j]];
      }
      blas::sgemm_rows_nt(static_cast<int>(n), static_cast<int>(W), 1.0f,
                          own.target.data() + off, scratch_.data(), 1.0f, mb.contrib.data());
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
      for (std::int64_t i = 0; i < n * segs; ++i) {
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
    changed_.clear();
    for (std::size_t r = 0; r < row_map_.size(); ++r) {
      if (row_map_[r] != old_map_[r]) changed_.push_back(static_cast<std::int64_t>(r));
    }
    // A rank-|changed| correction costs |changed|/m of a rebuild; above half, rebuild (which
    // also resets the float32 rounding that corrections accumulate).
    if (2 * static_cast<std::int64_t>(changed_.size()) <= mb.m) {
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
    // Gather the source rows through the other axes' permutations, weight folded in.
    for (std::int64_t l = l0; l < l1; ++l) {
      const std::int64_t k = l / m, r = l - k * m;
      const float* src = mb.source.data() + (k * m + row_map_[static_cast<std::size_t>(r)]) * n;
      float* dst = scratch_.data() + (l - l0) * n;
      const double w = weights_[static_cast<std::size_t>(k)];
      if (w == 1.0) {
        std::memcpy(dst, src, sizeof(float) * static_cast<std::size_t>(n));
      } else {
        const float wf = static_cast<float>(w);
        for (std::int64_t i = 0; i < n; ++i) dst[i] = wf * src[i];
      }
    }
    blas::sgemm_tn_rows(static_cast<int>(n), static_cast<int>(l1 - l0), 1.0f,
                        mb.target.data() + l0 * n, scratch_.data(), 1.0f, mb.contrib.data());
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
    for (std::int64_t l = l0; l < l1; ++l) {
      const std::int64_t k = l / c;
      const std::int64_t r = changed_[static_cast<std::size_t>(l - k * c)];
      const float* t = mb.target.data() + (k * m + r) * n;
      const float* s_new = mb.source.data() + (k * m + row_map_[static_cast<std::size_t>(r)]) * n;
      const float* s_old = mb.source.data() + (k * m + old_map_[static_cast<std::size_t>(r)]) * n;
      float* dt = scratch_t_.data() + (l - l0) * n;
      float* ds = scratch_.data() + (l - l0) * n;
      const float wf = static_cast<float>(weights_[static_cast<std::size_t>(k)]);
      std::memcpy(dt, t, sizeof(float) * static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) ds[i] = wf * (s_new[i] - s_old[i]);
    }
    blas::sgemm_tn_rows(static_cast<int>(n), static_cast<int>(l1 - l0), 1.0f, scratch_t_.data(),
                        scratch_.data(), 1.0f, mb.contrib.data());
  }
  ++stats.delta_builds;
  stats.gemm_flops += 2.0 * static_cast<double>(n) * static_cast<double>(n) *
                      static_cast<double>(rows_total);
}

void Matcher::build_cost(Group& g, std::vector<float>& cost, SolveResult& stats) {
  const auto t0 = Clock::now();
  cost.assign(g.static_cost.begin(), g.static_cost.end());
  for (int mi : g.members) {
    Member& mb = members_[static_cast<std::size_t>(mi)];
    if (mb.is_static) continue;
    if (perm_changed_since(mb)) refresh_member(mb, stats);
    const float* c = mb.contrib.data();
    float* dst = cost.data();
    const std::size_t nn = cost.size();
    for (std::size_t i = 0; i < nn; ++i) dst[i] += c[i];
  }
  stats.time_gemm += seconds_since(t0);
}

double Matcher::objective(const std::vector<std::vector<std::int64_t>>& perms) {
  std::lock_guard<std::mutex> lock(mutex_);
  return objective_locked(perms);
}

double Matcher::objective_locked(const std::vector<std::vector<std::int64_t>>& perms) const {
  double total = constant_;
  std::vector<std::int64_t> map;
  for (const Member& mb : members_) {
    if (!mb.primary) continue;
    std::vector<const std::int64_t*> ap(mb.others.size(), nullptr);
    for (std::size_t j = 0; j < mb.others.size(); ++j) {
      if (mb.others[j].group >= 0) ap[j] = perms[static_cast<std::size_t>(mb.others[j].group)].data();
    }
    build_row_map(mb.others, ap, map);
    const std::int64_t* p = perms[static_cast<std::size_t>(mb.group)].data();
    const std::int64_t n = mb.n, m = mb.m;
    bool identity = true;
    for (std::int64_t i = 0; i < n && identity; ++i) identity = p[i] == i;
    std::vector<float> row(static_cast<std::size_t>(n));
    for (std::int64_t k = 0; k < num_pairs_; ++k) {
      double acc = 0.0;
      for (std::int64_t r = 0; r < m; ++r) {
        const float* tr = mb.target.data() + (k * m + r) * n;
        const float* sr = mb.source.data() + (k * m + map[static_cast<std::size_t>(r)]) * n;
        if (!identity) {  // gather first, so that the float64 dot runs on contiguous rows
          for (std::int64_t i = 0; i < n; ++i) row[static_cast<std::size_t>(i)] = sr[p[i]];
          sr = row.data();
        }
        acc += dot_f64(tr, sr, n);
      }
      total += weights_[static_cast<std::size_t>(k)] * acc;
    }
  }
  return total;
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
  for (std::size_t g = 0; g < G; ++g) perms_view_[g] = groups_[g].perm;

  out = SolveResult{};
  out.time_static_gemm = static_gemm_time_;
  static_gemm_time_ = 0.0;
  double obj = objective_locked(perms_view_);
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
      build_cost(gr, cost, out);
      const std::int64_t n = gr.n;
      cols.resize(static_cast<std::size_t>(n));
      new_duals.resize(static_cast<std::size_t>(n));
      const auto t_lap = Clock::now();
      lap::WarmStart<float> warm;
      if (gr.has_duals) {
        warm.col_duals = gr.duals.data();
        warm.col_of_row = gr.perm.data();
      }
      const lap::Solution<float> sol{cols.data(), nullptr, new_duals.data()};
      const lap::Status st = lap::solve<float>(cost.data(), n, n, n, true, sol, warm);
      out.time_lap += seconds_since(t_lap);
      ++out.lap_solves;
      if (st != lap::Status::ok) return {Status::lap_failed, gi, -1};
      gr.duals.swap(new_duals);
      gr.has_duals = true;
      dirty[static_cast<std::size_t>(gi)] = 0;
      double before = 0.0, after = 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        before += cost[static_cast<std::size_t>(i * n + gr.perm[static_cast<std::size_t>(i)])];
        after += cost[static_cast<std::size_t>(i * n + cols[static_cast<std::size_t>(i)])];
      }
      // Keep the old permutation unless the new one is at least as good in float64 (guards
      // against a float32 rounding tie making the objective go down).
      if (cols == gr.perm) ++out.lap_unchanged;
      if (cols != gr.perm && after >= before) {
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
  out.objective = objective_locked(perms_view_);
  out.time_total = seconds_since(t_start);
  return {};
}

int set_blas_threads(int num_threads) {
  if (num_threads > 0) blas::pool_threads_setting().store(num_threads);
  return blas::pool_threads();
}

std::vector<std::vector<int>> python_shuffle_orders(std::uint64_t seed, int n, int sweeps) {
  PyRandom rng(seed);
  std::vector<std::vector<int>> orders;
  for (int s = 0; s < sweeps; ++s) {
    std::vector<int> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    rng.shuffle(order);
    orders.push_back(order);
  }
  return orders;
}

}  // namespace trajtransfer::match

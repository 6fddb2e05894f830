// Coordinate-descent permutation matcher (Git Re-Basin weight matching generalised to K weighted
// pairs): maximise sum_k w_k <target_k, pi(source_k)> over one permutation per group.
//
// Python-free: raw float32 pointers in, status codes out (design.md §5, algorithm-spec §5.5).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "match/layout.hpp"

namespace trajtransfer::match {

/// Why a call failed; `Error::index` names the tensor (or group) and `Error::axis` the axis.
enum class Status : int {
  ok = 0,
  bad_spec = 1,        ///< a tensor names an unknown group, or one group on two of its axes
  size_mismatch = 2,   ///< an axis length differs from its group's size (or a size is < 1)
  non_finite = 3,      ///< NaN or inf in an added tensor (index = tensor)
  bad_init = 4,        ///< an initial permutation is not a permutation (index = group)
  no_pairs = 5,        ///< solve() before any add()
  lap_failed = 6,      ///< the assignment solver rejected a cost matrix (index = group)
  bad_argument = 7,    ///< max_sweeps < 0, tol < 0 or NaN, non-finite weight
  interrupted = 8,     ///< the thread's interrupt poll (lap::set_interrupt_poll) asked to stop
  bad_factors = 9,     ///< factors for a tensor that is not (n_out, n_in) up to unpermuted
                       ///< trailing axes of size 1, or on one side of the pair only (index =
                       ///< tensor)
};

struct Error {
  Status status = Status::ok;
  std::int64_t index = -1;
  std::int64_t axis = -1;
  bool ok() const { return status == Status::ok; }
};

/// One tensor of the spec: its shape and, per axis, the group that permutes it (-1 = none).
struct TensorSpec {
  std::vector<std::int64_t> shape;
  std::vector<int> groups;
};

/// One tensor of one side of a pair: its dense C-contiguous float32 buffer (`dense`), or the
/// factors of its gradient G = delta^T inputs: delta (rows, n_out) and inputs (rows, n_in),
/// C-contiguous float32, for a tensor (n_out, n_in) up to unpermuted trailing axes of size 1.
struct TensorInput {
  const float* dense = nullptr;
  const float* delta = nullptr;
  const float* inputs = nullptr;
  std::int64_t rows = 0;
};

struct SolveOptions {
  int max_sweeps = 100;
  double tol = 1e-9;        ///< stop when a sweep gains <= tol * max(1, |objective|)
  std::uint64_t seed = 0;   ///< sweep order = CPython random.Random(seed).shuffle per sweep
  bool warm_duals = true;   ///< reuse each group's LAP column duals from its previous solve
  bool exact_objective = true;  ///< false: `objective` is the tracked value (history's last
                                ///< entry) instead of a float64 pass over the stored pairs
  bool greedy_start = false;    ///< start from one greedy pass over the groups in spec order
                                ///< (each solved on the terms whose other groups are already
                                ///< assigned) instead of `init` / the previous / the identity
};

struct SolveResult {
  std::vector<std::vector<std::int64_t>> perms;  ///< per group, gather semantics
  double objective = 0.0;        ///< exact float64 objective at `perms`
  std::vector<double> history;   ///< [0] start objective (exact), [s] after sweep s (tracked)
  int sweeps = 0;
  bool converged = false;
  double time_gemm = 0.0, time_lap = 0.0, time_total = 0.0;
  std::int64_t lap_solves = 0;     ///< group solves actually run (dirty groups only)
  std::int64_t lap_unchanged = 0;  ///< of those, solves that kept the group's permutation
  std::int64_t member_builds = 0;  ///< (group, tensor) cost terms rebuilt with a full GEMM
  std::int64_t delta_builds = 0;   ///< (group, tensor) cost terms updated on changed rows only
  double gemm_flops = 0.0;         ///< floating-point operations of those GEMMs
  double time_static_gemm = 0.0;   ///< GEMMs run by add() since the previous solve (static
                                   ///< terms, and new pairs' shares of up-to-date dynamic terms)
  double static_gemm_flops = 0.0;  ///< floating-point operations of those add() GEMMs
};

class Matcher {
 public:
  /// Compile a spec. `group_sizes[g]` is n_g; every axis with group g must have length n_g.
  static Error create(std::vector<std::int64_t> group_sizes, std::vector<TensorSpec> tensors,
                      std::unique_ptr<Matcher>& out);

  /// Append one (target, source) pair with weight w: one C-contiguous float32 buffer per tensor,
  /// in spec order, of that tensor's shape. Updates the cached static cost terms incrementally.
  /// On error nothing is added.
  Error add(const float* const* targets, const float* const* sources, double weight);

  /// add() with each tensor of each side dense or factored (see TensorInput; a tensor is
  /// factored on both sides or on neither). A factored tensor's cost terms and exact objective
  /// come from its factors (docs/dev/factored-pairs.md); the dense gradient is never formed.
  Error add(const TensorInput* targets, const TensorInput* sources, double weight);

  /// Run coordinate descent. `init` is null (identity) or one pointer per group (n_g int64 each,
  /// copied). With `use_previous` and no init, start from the previous solve's permutations.
  Error solve(const std::int64_t* const* init, bool use_previous, const SolveOptions& opts,
              SolveResult& out);

  /// Exact float64 objective at the given permutations (one vector per group).
  double objective(const std::vector<std::vector<std::int64_t>>& perms);

  /// Pre-allocate the pair store for `pairs` pairs in total (avoids regrowth copies).
  void reserve(std::int64_t pairs);

  /// Drop every pair and every cost term built from them, keeping the store's memory (no new
  /// page faults when as many pairs are added again), each group's current permutation and its
  /// LAP duals: a following solve can reuse them (`use_previous`, `warm_duals`). For callers that
  /// replace all pairs between solves (GMT).
  void clear_pairs();

  std::int64_t num_pairs() const { return num_pairs_; }

  /// True in a child forked while another thread of the parent was inside a call on this
  /// matcher: the copy holds a half-done update, so callers must not use it (the bindings raise).
  /// Matchers idle at the fork are held locked across it and stay fully usable in the child.
  bool forked_mid_call() const { return forked_mid_call_; }

  ~Matcher();
  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;
  std::int64_t num_groups() const { return static_cast<std::int64_t>(groups_.size()); }
  std::int64_t group_size(std::int64_t g) const { return groups_[static_cast<std::size_t>(g)].n; }

 private:
  /// One (tensor, permuted axis) and its cost term.
  ///
  /// Layout: a member of kind `rows` owns its tensor's dense pairs unfolded along its axis (K*m
  /// rows of n floats for K dense pairs, in the order of dense_pairs_; the other axes'
  /// permutations are row reindexes); the tensor's factored pairs live in factors_. A tensor
  /// with exactly two permuted axes a < b is stored once, by its axis-b member; its axis-a
  /// member (kind `cols`) reads that store as pre_a blocks per pair of shape
  /// (n_a, W = segs * n_b), in which the permutation of b acts inside each of the `segs`
  /// segments of n_b floats.
  enum class Kind { rows, cols };
  struct Member {
    int tensor = -1;
    int axis = -1;
    int group = -1;
    Kind kind = Kind::rows;
    int owner = -1;                 ///< member whose target/source hold the data (self if rows)
    std::int64_t blocks = 0;        ///< cols: blocks per pair (product of the axes before a)
    std::int64_t segs = 0;          ///< cols: segments per block row
    std::int64_t seg_len = 0;       ///< cols: n_b
    std::size_t cols_other = 0;     ///< cols: index of axis b in `others`
    std::int64_t n = 0, m = 0, pre = 0, post = 0;
    bool is_static = true;          ///< no other permuted axis: its cost term is cached in
                                    ///< the group's static matrix at add time
    bool primary = false;           ///< first permuted axis of its tensor: used for objective()
    bool native = false;            ///< static with pre == 1: stored in the tensor's own layout,
                                    ///< n rows of `post` floats (no transpose at add time; the
                                    ///< group's permutation is a row reindex in objective())
    std::vector<OtherAxis> others;  ///< the other axes in order
    FloatStore target, source;          ///< (K*m, n) each; native: (K*n, post)
    std::vector<float> contrib;         ///< cached (n, n) cost term of a dynamic member
    std::vector<std::uint64_t> seen;    ///< versions of `others`' groups when contrib was built
    std::vector<std::vector<std::int64_t>> seen_perms;  ///< and their permutations (per other
                                                        ///< axis; empty for unpermuted ones)
    bool contrib_valid = false;
  };

  /// A tensor's factored pairs: their factors stacked by rows in pair order (entry e holds
  /// target rows [off_t[e], off_t[e + 1]) and source rows [off_s[e], off_s[e + 1])), unweighted.
  struct FactorStore {
    bool allowed = false;            ///< (n_out, n_in) up to unpermuted trailing 1s
    std::int64_t n_out = 0, n_in = 0;
    FloatStore dt, at, ds, as;       ///< (rows, n_out) / (rows, n_in), row-major
    std::vector<std::int64_t> pair;  ///< pair index of entry e
    std::vector<std::int64_t> off_t{0}, off_s{0};
    std::int64_t max_rows_t = 0;     ///< most target rows of one entry
  };

  struct Group {
    std::int64_t n = 0;
    std::vector<int> members;      ///< indices into members_
    std::vector<int> neighbours;   ///< groups sharing a tensor with this one
    std::vector<float> static_cost;  ///< (n, n): sum of static members' terms over all pairs
    std::vector<std::int64_t> perm;  ///< current permutation (kept between solves)
    std::vector<float> duals;        ///< LAP column duals of the last solve
    std::vector<std::int64_t> lap_cols;  ///< and the assignment they belong to (which `perm`
                                         ///< is not after a new init or a kept tie)
    bool has_duals = false;
    bool all_static = false;         ///< no member depends on another group's permutation
    std::uint64_t version = 0;       ///< bumped whenever perm changes
  };

  /// Exact per-(member, pair) objective terms at one set of permutations: acc[member][k] is
  /// <T_k, pi(S_k)> of a primary member, unweighted, for pairs k < upto. The objective is linear
  /// in the pairs, so a cache stays valid as pairs are appended and only new pairs are read.
  struct ObjectiveCache {
    std::vector<std::vector<std::int64_t>> perms;
    std::vector<std::vector<double>> acc;
    /// native members: the n row dots of each pair (k * n + i), so that moving the cache to new
    /// permutations re-reads only the rows whose source row changed.
    std::vector<std::vector<double>> row_dots;
    std::int64_t upto = 0;
    bool valid = false;
  };

  Matcher();  // registers the matcher with the fork handlers (~Matcher unregisters it)
  static void before_fork();
  static void after_fork(bool child);
  double objective_locked(const std::vector<std::vector<std::int64_t>>& perms);
  double objective_cached(const std::vector<std::vector<std::int64_t>>& perms);
  double sum_terms(const std::vector<std::vector<double>>& acc) const;
  double pair_term(const Member& mb, std::int64_t k, const std::int64_t* p,
                   const std::int64_t* map, std::vector<float>& row) const;
  bool stored_as_given(const Member& mb) const;
  void extend_cache(ObjectiveCache& c);
  void extend_members(ObjectiveCache& c, const std::vector<std::size_t>& mis, std::int64_t k0,
                      std::int64_t k1);
  void retarget_cache(ObjectiveCache& c, const std::vector<std::vector<std::int64_t>>& perms);
  double native_term(const Member& mb, std::int64_t k, const std::int64_t* p, double* dots,
                     const std::vector<std::int64_t>* only) const;
  /// The group's cost matrix at the current permutations: static_cost itself when every term
  /// is static, else built into `cost`.
  /// With `assigned`, the dynamic terms that involve a group not yet assigned are left out.
  const float* build_cost(Group& g, std::vector<float>& cost, SolveResult& stats,
                          const std::vector<char>* assigned = nullptr);
  /// Solve group `gi` on `cp` (maximise, warm from its duals); returns false if the LAP failed.
  bool solve_group(std::size_t gi, const float* cp, std::vector<std::int64_t>& cols,
                   std::vector<float>& new_duals, SolveResult& out);
  /// One greedy pass in spec order: each group's permutation from its partial cost.
  Error greedy_pass(SolveResult& out);
  void refresh_member(Member& mb, SolveResult& stats);
  void refresh_rows(Member& mb, SolveResult& stats);
  void full_build(Member& mb, SolveResult& stats);
  void delta_build(Member& mb, SolveResult& stats);
  void full_build_cols(Member& mb, SolveResult& stats);
  double accumulate_rows(Member& mb, std::int64_t k0, bool overwrite, const std::int64_t* q);
  /// out += the factored entries [e0, end) of mb's term, the other axis gathered by q (null:
  /// unpermuted or identity). Returns the flops.
  double accumulate_factored(const Member& mb, std::int64_t e0, const std::int64_t* q,
                             float* out);
  /// Y = w M own_s (rows_t x n) of factored entry e: M = inner_t pi(inner_s)^T, pi = q on the
  /// other axis (null: none). g and m: scratch.
  void factored_products(const Member& mb, std::int64_t e, const std::int64_t* q, float* y,
                         std::vector<float>& g, std::vector<float>& m) const;
  /// add(): the new pair's static terms of group gi, factored and rows-layout dense ones, as
  /// one GEMM (factored[t]: tensor t came as factors). Returns the flops.
  double fused_static_add(std::size_t gi, float alpha, const std::vector<char>& factored);
  /// out += the factored entries' correction for the slices changed_ of the other axis whose
  /// source moved from q_old to q_new. Returns the flops.
  double correct_factored(const Member& mb, const std::int64_t* q_new, const std::int64_t* q_old,
                          float* out);
  /// Whether a correction of c slices beats a rebuild (on top of the "at most half" rule): a
  /// factored pair's rebuild costs about rows x n^2, its correction c x n^2.
  bool correction_pays(const Member& mb, std::size_t c) const;
  /// Exact float64 <T, pi(S)> of factored entry e of tensor t (unweighted).
  double factored_term(int t, std::int64_t e, const std::int64_t* p_out,
                       const std::int64_t* p_in) const;
  /// The member's own and other permuted axis mapped to (p_out, p_in) for factored_term.
  double member_factored_term(const Member& mb, std::int64_t e, const std::int64_t* own,
                              const std::int64_t* other) const;
  /// The permutation of a factored tensor's other permuted axis (null if none): the current
  /// one, or the one mb's cached term was built at.
  const std::int64_t* other_perm(const Member& mb, bool seen) const;
  std::int64_t dense_slot_from(int t, std::int64_t k0) const;
  std::int64_t factor_entry_from(int t, std::int64_t k0) const;
  /// Weight of the pair in dense slot `slot` of tensor t.
  double dense_weight(int t, std::int64_t slot) const;
  double accumulate_cols(Member& mb, std::int64_t k0, const std::int64_t* q, bool overwrite);
  void delta_build_cols(Member& mb, SolveResult& stats);
  std::vector<const std::int64_t*> axis_perms(const Member& mb) const;
  bool perm_changed_since(const Member& mb) const;

  std::vector<Group> groups_;
  std::vector<Member> members_;
  std::vector<TensorSpec> tensors_;
  std::vector<double> weights_;
  std::vector<FactorStore> factors_;                ///< per tensor
  std::vector<std::vector<std::int64_t>> dense_pairs_;  ///< per tensor: pair of each dense slot
  std::vector<std::vector<std::int64_t>> slot_;  ///< per tensor and pair: its dense slot, or
                                                 ///< -1 - its factored entry
  double constant_ = 0.0;  ///< sum over unpermuted tensors of w_k <T, S> (exact)
  std::int64_t num_pairs_ = 0;
  double static_gemm_time_ = 0.0;  ///< add()'s GEMM seconds since the last solve
  double static_gemm_flops_ = 0.0;  ///< and their floating-point operations
  FloatStore scratch_, scratch_t_;
  std::vector<std::int64_t> row_map_, old_map_, changed_;
  std::vector<std::vector<std::int64_t>> perms_view_;
  ObjectiveCache identity_cache_;  ///< at the identity: filled by add() while the pair is hot
  ObjectiveCache last_cache_;      ///< at the permutations of the last exact objective
  std::vector<int> primary_of_;   ///< per tensor: its primary member (-1: unpermuted tensor)
  std::vector<double> add_dots_;  ///< add(): per tensor float64 dot at the identity
  bool last_lap_interrupted_ = false;  ///< solve_group()'s failure was an interrupt
  std::mutex mutex_;
  bool forked_mid_call_ = false;
};

/// Threads used by our OpenBLAS pool (0 or less: leave as is). Returns the count in effect.
int set_blas_threads(int num_threads);

}  // namespace trajtransfer::match

// Batched exact LAP: one thread block per problem, shortest augmenting paths with explicit duals.
//
// The algorithm is the one of Crouse (2016), "On implementing 2D rectangular assignment
// algorithms" (the one SciPy's rectangular_lsap implements), with the column scan of each Dijkstra
// step spread over the threads of a block and a block-wide min-reduction choosing the next column,
// preceded by a row reduction with a conflict-free greedy matching and, optionally, Jonker-
// Volgenant's augmenting row reduction (LapBatchParams::row_reduction_passes).
//
// Everything here is templated on a `Block`, so that the same code runs
//   * on the GPU, with CudaBlock (below): warps, __syncthreads, shared-memory reductions, and
//   * on the host, with the emulation in lap_emulation.cpp (std::thread per "thread", a real
//     barrier), which is how the logic is tested against SciPy on machines without a GPU.
//
// A Block provides, for the calling thread:
//   thread_rank(), num_threads()                      this thread and the block size
//   sync()                                            barrier; makes earlier writes visible
//   any(p) -> bool                                    barrier + OR of p over the block
//   argmin(Candidate) -> Candidate                    barrier + block-wide min, same for all
//   group_rank(), num_groups(), group_lane(), group_size()
//   group_argmin(Candidate) -> Candidate              min within a group (a warp), no barrier
//   atomic_min(int32*, int32)
// Control flow that contains a barrier is uniform: it depends only on values every thread
// computed identically (reduction results, and state read after a barrier).
//
// Memory ownership (why the barriers below suffice): column j belongs to thread j % num_threads;
// only its owner touches sp[j], path[j], sc[j] and v[j] inside an augmentation. The row-side state
// (u, col4row, row4col) changes only between barriers.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "cuda/lap_params.hpp"

#if defined(__CUDACC__)
#define TT_HD __host__ __device__
#define TT_HD_INLINE __host__ __device__ __forceinline__
#else
#define TT_HD
#define TT_HD_INLINE inline
#endif

namespace trajtransfer::cuda::lapk {

template <class T>
TT_HD_INLINE T infinity() {
  return static_cast<T>(INFINITY);
}

/// A column offered to a min-reduction, ordered by (value, key) with key = assigned << 30 | col:
/// among equal distances a free column wins (it ends the search, as in SciPy), then the lowest
/// index. A strict total order on non-NaN values, hence every thread agrees on the minimum.
/// `row` rides along: the column's matched row (-1 if free), known only to the column's owner.
template <class T>
struct Candidate {
  T value;
  std::int32_t key;
  std::int32_t row;
};

constexpr std::int32_t kColumnBits = 30;  // launchers require rows, cols < 2**30
constexpr std::int32_t kNoKey = 2147483647;  // INT32_MAX: loses every tie

TT_HD_INLINE std::int32_t column_key(std::int32_t col, bool assigned) {
  return assigned ? (col | (std::int32_t{1} << kColumnBits)) : col;
}
TT_HD_INLINE std::int32_t key_column(std::int32_t key) {
  return key & ((std::int32_t{1} << kColumnBits) - 1);
}

template <class T>
TT_HD_INLINE Candidate<T> no_candidate() {
  return Candidate<T>{infinity<T>(), kNoKey, -1};
}

template <class T>
TT_HD_INLINE bool precedes(const Candidate<T>& a, const Candidate<T>& b) {
  if (a.value < b.value) return true;
  if (b.value < a.value) return false;
  return a.key < b.key;
}

/// One problem in the solved orientation (n <= m) with its slice of the workspace.
template <class T>
struct Problem {
  const T* cost;
  std::int64_t row_stride, col_stride;
  std::int32_t n, m;
  const T* warm_v;  // (m,) or null
  T* u;             // (n,) row duals
  T* v;             // (m,) column duals
  T* sp;            // (m,) shortest-path distances of the current augmentation
  std::int32_t* path;     // (m,) predecessor row of each reached column
  std::int32_t* row4col;  // (m,) matched row of each column, -1 if free
  std::int32_t* claim;    // (m,) lowest row whose reduced minimum is this column (row reduction)
  std::int32_t* col4row;  // (n,) matched column of each row, -1 if free
  std::int32_t* free_a;   // (n,) row lists of the augmenting row reduction's passes
  std::int32_t* free_b;   // (n,)
  std::uint8_t* sc;       // (m,) column already scanned in the current augmentation
};

/// Everything the kernel needs for the whole batch, in the solved orientation.
template <class T>
struct KernelParams {
  const T* cost;
  std::int64_t batch, batch_stride, row_stride, col_stride;
  std::int32_t n, m;
  const T* warm_v;        // (batch, m) or null
  int arr_passes;         // augmenting row reduction passes
  std::int64_t* out;      // (batch, n)
  std::int32_t* status;   // (batch,)
  T* u_out;               // (batch, n) or null
  T* v_out;               // (batch, m) or null
  bool shared_state;      // per-column state in the block's dynamic shared memory
  T* ws_real;             // (batch, n + 2m)
  std::int32_t* ws_int;   // (batch, 3n + 3m)
  std::uint8_t* ws_flag;  // (batch, m)

  TT_HD_INLINE Problem<T> problem(std::int64_t b) const {
    T* r = ws_real + b * (std::int64_t{n} + 2 * std::int64_t{m});
    std::int32_t* k = ws_int + b * (3 * std::int64_t{n} + 3 * std::int64_t{m});
    return Problem<T>{cost + b * batch_stride, row_stride, col_stride, n, m,
                      warm_v != nullptr ? warm_v + b * m : nullptr,
                      r, r + n, r + n + m,
                      k, k + m, k + 2 * m, k + 3 * m, k + 3 * m + n, k + 3 * m + 2 * n,
                      ws_flag + b * m};
  }
};

/// Bytes of per-column state (v, sp, path, row4col, sc) that can live in shared memory instead.
template <class T>
constexpr std::size_t shared_state_bytes(std::int64_t m) {
  return static_cast<std::size_t>(m) * (2 * sizeof(T) + 2 * sizeof(std::int32_t) + 1);
}

/// Point the per-column state of `p` into `smem` (shared_state_bytes<T>(p.m) bytes, T-aligned).
template <class T>
TT_HD_INLINE void place_column_state(Problem<T>& p, unsigned char* smem) {
  p.v = reinterpret_cast<T*>(smem);
  p.sp = p.v + p.m;
  p.path = reinterpret_cast<std::int32_t*>(p.sp + p.m);
  p.row4col = p.path + p.m;
  p.sc = reinterpret_cast<std::uint8_t*>(p.row4col + p.m);
}

/// Byte layout of the scratch memory of a batch (one allocation; real arrays first for alignment).
struct WorkspaceLayout {
  std::size_t int_offset, flag_offset, transposed_offset, bytes;
};

template <class T>
inline WorkspaceLayout workspace_layout(std::int64_t batch, std::int64_t n, std::int64_t m,
                                        bool transposed_copy) {
  auto align = [](std::size_t x) { return (x + 255) / 256 * 256; };
  const std::size_t b = static_cast<std::size_t>(batch);
  const std::size_t nn = static_cast<std::size_t>(n), mm = static_cast<std::size_t>(m);
  WorkspaceLayout w{};
  w.int_offset = align(b * (nn + 2 * mm) * sizeof(T));
  w.flag_offset = w.int_offset + align(b * (3 * nn + 3 * mm) * sizeof(std::int32_t));
  w.transposed_offset = w.flag_offset + align(b * mm);
  w.bytes = w.transposed_offset + (transposed_copy ? align(b * nn * mm * sizeof(T)) : 0);
  return w;
}

/// Map the user's parameters onto the solved orientation. `cost` with (row_stride, col_stride)
/// addresses the solved problem's C[i, j]; `workspace` has workspace_layout<T>(...).bytes bytes.
template <class T>
inline KernelParams<T> make_kernel_params(const LapBatchParams<T>& prm, const T* cost,
                                          std::int64_t row_stride, std::int64_t col_stride,
                                          void* workspace, const WorkspaceLayout& layout) {
  const bool transposed = prm.rows > prm.cols;
  auto* base = static_cast<unsigned char*>(workspace);
  KernelParams<T> kp{};
  kp.cost = cost;
  kp.batch = prm.batch;
  kp.batch_stride = prm.rows * prm.cols;
  kp.row_stride = row_stride;
  kp.col_stride = col_stride;
  kp.n = static_cast<std::int32_t>(transposed ? prm.cols : prm.rows);
  kp.m = static_cast<std::int32_t>(transposed ? prm.rows : prm.cols);
  kp.warm_v = transposed ? nullptr : prm.col_duals_in;
  kp.arr_passes = prm.row_reduction_passes;
  kp.out = prm.assignment;
  kp.status = prm.status;
  // The solved problem's rows are the user's columns when transposed: its duals swap roles.
  kp.u_out = transposed ? prm.col_duals : prm.row_duals;
  kp.v_out = transposed ? prm.row_duals : prm.col_duals;
  kp.ws_real = reinterpret_cast<T*>(base);
  kp.ws_int = reinterpret_cast<std::int32_t*>(base + layout.int_offset);
  kp.ws_flag = base + layout.flag_offset;
  return kp;
}

template <bool Maximize, class T>
TT_HD_INLINE T signed_cost(const Problem<T>& p, std::int32_t i, std::int32_t j) {
  const T c = p.cost[i * p.row_stride + j * p.col_stride];
  return Maximize ? -c : c;
}

/// Jonker-Volgenant's augmenting row reduction, run on the state left by the row reduction.
///
/// Each step takes a free row i, finds its two smallest reduced costs c_ij - v_j (two block
/// reductions), and gives i its best column j1, lowering v_j1 by the gap to the second so that
/// i stays at its row minimum. A row evicted from j1 (after lowering) is processed next; one evicted
/// on a tie goes to the next pass. Invariant kept (the one the augmentations need): every
/// assigned row sits at a minimum of its reduced costs; v only decreases, and only on columns that
/// stay assigned (so v = 0 on free columns, as rectangular optimality needs). A step cap bounds
/// the work; rows still free are left to the augmentations.
///
/// Ownership: v[j] and row4col[j] are read and written only by column j's owner (the matched row
/// reaches the others as the reduction payload); col4row is read, not written, until the rebuild
/// at the end; the row lists are written by thread 0 and read in the next pass, after a barrier.
template <class T, bool Maximize, class Block>
TT_HD void augmenting_row_reduction(Block& blk, const Problem<T>& p, int passes) {
  const std::int32_t tid = blk.thread_rank(), nt = blk.num_threads();
  const std::int32_t n = p.n, m = p.m;
  const T inf = infinity<T>();
  std::int32_t* list_in = p.free_a;
  std::int32_t* list_out = p.free_b;
  std::int32_t count_in = -1;  // first pass: the rows the row reduction left free, in order
  const std::int64_t step_cap = 4 * std::int64_t{n} + 32;
  for (int pass = 0; pass < passes; ++pass) {
    std::int32_t count_out = 0, next = 0, chain = -1;
    std::int64_t steps = 0;
    for (;;) {
      std::int32_t i;
      if (chain >= 0) {
        i = chain;
        chain = -1;
      } else if (count_in < 0) {
        while (next < n && p.col4row[next] >= 0) ++next;
        if (next >= n) break;
        i = next++;
      } else {
        if (next >= count_in) break;
        i = list_in[next++];
      }
      if (++steps > step_cap) break;  // i and the rest of the list stay free

      Candidate<T> b1 = no_candidate<T>(), b2 = no_candidate<T>();
      for (std::int32_t j = tid; j < m; j += nt) {
        const Candidate<T> c{signed_cost<Maximize>(p, i, j) - p.v[j], column_key(j, false),
                             p.row4col[j]};
        if (precedes(c, b1)) {
          b2 = b1;
          b1 = c;
        } else if (precedes(c, b2)) {
          b2 = c;
        }
      }
      const Candidate<T> w1 = blk.argmin(b1);
      const Candidate<T> w2 = blk.argmin(b1.key == w1.key ? b2 : b1);
      if (!(w1.value < inf)) continue;  // no allowed column: the augmentation reports it
      const bool lower = w1.value < w2.value && w2.value < inf;
      std::int32_t j = key_column(w1.key), evicted = w1.row;
      if (!lower && evicted >= 0) {
        if (!(w2.value < inf)) continue;  // its only allowed column is taken: left to phase 2
        j = key_column(w2.key);            // a tie: take the other minimal column
        evicted = w2.row;
      }
      if (j % nt == tid) {
        if (lower) p.v[j] -= w2.value - w1.value;
        p.row4col[j] = i;
      }
      if (evicted >= 0) {
        if (lower) {
          chain = evicted;
        } else {
          if (tid == 0) list_out[count_out] = evicted;
          ++count_out;
        }
      }
    }
    blk.sync();  // list_out is complete (and v, row4col settled) before the next pass reads them
    std::int32_t* t = list_in;
    list_in = list_out;
    list_out = t;
    count_in = count_out;
  }
  // Rebuild the row side from row4col, and u_i = c_ij - v_j on the assigned pairs (the row
  // minima); free rows keep the finite u of the row reduction.
  for (std::int32_t i = tid; i < n; i += nt) p.col4row[i] = -1;
  blk.sync();
  for (std::int32_t j = tid; j < m; j += nt) {
    if (p.row4col[j] >= 0) p.col4row[p.row4col[j]] = j;
  }
  blk.sync();
  for (std::int32_t i = tid; i < n; i += nt) {
    const std::int32_t j = p.col4row[i];
    if (j >= 0) p.u[i] = signed_cost<Maximize>(p, i, j) - p.v[j];
  }
  blk.sync();
}

/// Solve one problem; every thread of the block calls this and gets the same status.
template <class T, bool Maximize, class Block>
TT_HD std::int32_t solve_problem(Block& blk, const Problem<T>& p, int arr_passes) {
  const std::int32_t tid = blk.thread_rank(), nt = blk.num_threads();
  const std::int32_t n = p.n, m = p.m;
  const T inf = infinity<T>();

  // Phase 0: column duals (warm start or 0), empty matching.
  bool bad = false;
  for (std::int32_t j = tid; j < m; j += nt) {
    const T vj = p.warm_v != nullptr ? p.warm_v[j] : T(0);
    bad = bad || !(vj - vj == T(0));  // NaN or +-inf
    p.v[j] = vj;
    p.row4col[j] = -1;
    p.claim[j] = kNoKey;
  }
  if (blk.any(bad)) return lap_invalid_entries;

  // Phase 1 (one group per row): u_i = min_j (c_ij - v_j), validating every entry on the way;
  // each row claims its reduced minimum, the lowest-index claimant of a column gets it. All
  // reduced costs are then >= 0 and claimed pairs are tight, the invariant of the augmentations.
  // (With n < m this is only valid because v = 0: warm duals are for square problems.)
  bool invalid = false;
  for (std::int32_t i = blk.group_rank(); i < n; i += blk.num_groups()) {
    Candidate<T> best = no_candidate<T>();
    for (std::int32_t j = blk.group_lane(); j < m; j += blk.group_size()) {
      const T c = signed_cost<Maximize>(p, i, j);
      invalid = invalid || !(c == c) || c == -inf;
      const Candidate<T> cand{c - p.v[j], column_key(j, false), -1};
      if (precedes(cand, best)) best = cand;
    }
    best = blk.group_argmin(best);
    if (blk.group_lane() == 0) {
      // A row with only forbidden entries keeps u = 0 and no claim: its augmentation reports
      // infeasibility (u = inf would turn later reduced costs into inf - inf = NaN).
      const bool finite = best.value < inf;
      p.u[i] = finite ? best.value : T(0);
      p.col4row[i] = finite ? key_column(best.key) : -1;
      if (finite) blk.atomic_min(&p.claim[key_column(best.key)], i);
    }
  }
  if (blk.any(invalid)) return lap_invalid_entries;
  for (std::int32_t i = tid; i < n; i += nt) {
    const std::int32_t j = p.col4row[i];
    if (j >= 0) {
      if (p.claim[j] == i) {
        p.row4col[j] = i;
      } else {
        p.col4row[i] = -1;
      }
    }
  }
  blk.sync();

  if (arr_passes > 0) augmenting_row_reduction<T, Maximize>(blk, p, arr_passes);

  // Phase 2: one shortest augmenting path (Dijkstra on reduced costs) per free row.
  for (std::int32_t cur = 0; cur < n; ++cur) {
    if (p.col4row[cur] >= 0) continue;
    for (std::int32_t j = tid; j < m; j += nt) {
      p.sp[j] = inf;
      p.sc[j] = 0;
    }
    T min_val = T(0);
    std::int32_t i = cur;
    std::int32_t sink = -1;
    while (sink < 0) {
      const T ui = p.u[i];
      Candidate<T> best = no_candidate<T>();
      for (std::int32_t j = tid; j < m; j += nt) {
        if (p.sc[j] != 0) continue;
        // Same expression (and rounding) as SciPy's rectangular_lsap.
        const T r = min_val + signed_cost<Maximize>(p, i, j) - ui - p.v[j];
        T s = p.sp[j];
        if (r < s) {
          p.path[j] = i;
          p.sp[j] = r;
          s = r;
        }
        const std::int32_t owner_row = p.row4col[j];
        const Candidate<T> cand{s, column_key(j, owner_row >= 0), owner_row};
        if (precedes(cand, best)) best = cand;
      }
      const Candidate<T> win = blk.argmin(best);
      if (!(win.value < inf)) return lap_infeasible;  // no finite augmenting path
      min_val = win.value;
      const std::int32_t col = key_column(win.key);
      if (col % nt == tid) p.sc[col] = 1;
      const std::int32_t next = win.row;
      if (next < 0) {
        sink = col;
      } else {
        i = next;
      }
    }
    // Dual update. The rows visited besides `cur` are exactly row4col[j] of the scanned columns
    // other than the sink, so the owner of column j updates both duals of its pair.
    for (std::int32_t j = tid; j < m; j += nt) {
      if (p.sc[j] != 0) {
        const T d = min_val - p.sp[j];
        p.v[j] -= d;
        if (j != sink) p.u[p.row4col[j]] += d;
      }
    }
    if (tid == 0) p.u[cur] += min_val;
    blk.sync();
    if (tid == 0) {
      // Flip the path (sequential and short in practice).
      std::int32_t j = sink;
      for (;;) {
        const std::int32_t r = p.path[j];
        p.row4col[j] = r;
        const std::int32_t prev = p.col4row[r];
        p.col4row[r] = j;
        j = prev;
        if (r == cur) break;
      }
    }
    blk.sync();
  }
  return lap_ok;
}

/// Solve problem b of the batch and write its outputs (all threads of the block call this).
/// `smem`: the block's dynamic shared memory when kp.shared_state, else unused.
template <class T, bool Maximize, class Block>
TT_HD void run_problem(Block& blk, const KernelParams<T>& kp, std::int64_t b,
                       unsigned char* smem) {
  Problem<T> p = kp.problem(b);
  if (kp.shared_state) place_column_state(p, smem);
  const std::int32_t st = solve_problem<T, Maximize>(blk, p, kp.arr_passes);
  blk.sync();
  const std::int32_t tid = blk.thread_rank(), nt = blk.num_threads();
  for (std::int32_t i = tid; i < p.n; i += nt) {
    kp.out[b * p.n + i] = st == lap_ok ? std::int64_t{p.col4row[i]} : std::int64_t{-1};
    if (kp.u_out != nullptr) kp.u_out[b * p.n + i] = p.u[i];
  }
  if (kp.v_out != nullptr) {
    for (std::int32_t j = tid; j < p.m; j += nt) kp.v_out[b * p.m + j] = p.v[j];
  }
  if (tid == 0) kp.status[b] = st;
}

#if defined(__CUDACC__)

/// The Block of a real thread block: groups are warps; num_threads must be a multiple of 32.
template <class T>
struct CudaBlock {
  Candidate<T> (*partial)[32];  // __shared__ [2][32]: one slot per warp, double-buffered
  int buffer;

  __device__ std::int32_t thread_rank() const { return static_cast<std::int32_t>(threadIdx.x); }
  __device__ std::int32_t num_threads() const { return static_cast<std::int32_t>(blockDim.x); }
  __device__ std::int32_t group_rank() const { return thread_rank() >> 5; }
  __device__ std::int32_t num_groups() const { return num_threads() >> 5; }
  __device__ std::int32_t group_lane() const { return thread_rank() & 31; }
  __device__ std::int32_t group_size() const { return 32; }
  __device__ void sync() { __syncthreads(); }
  __device__ bool any(bool p) { return __syncthreads_or(p ? 1 : 0) != 0; }
  __device__ void atomic_min(std::int32_t* address, std::int32_t value) {
    atomicMin(address, value);
  }

  __device__ Candidate<T> group_argmin(Candidate<T> c) {
    // Butterfly: every lane ends with the minimum (the order is total, so all agree).
    for (int offset = 16; offset > 0; offset >>= 1) {
      const Candidate<T> o{__shfl_xor_sync(0xffffffffu, c.value, offset),
                           __shfl_xor_sync(0xffffffffu, c.key, offset)};
      if (precedes(o, c)) c = o;
    }
    return c;
  }

  // One barrier per call: the slots of call k are rewritten only by call k + 2, which no thread
  // reaches before every thread has passed the barrier of call k + 1 (after reading call k's).
  __device__ Candidate<T> argmin(Candidate<T> c) {
    c = group_argmin(c);
    if (group_lane() == 0) partial[buffer][group_rank()] = c;
    __syncthreads();
    const Candidate<T> mine =
        group_lane() < num_groups() ? partial[buffer][group_lane()] : no_candidate<T>();
    buffer ^= 1;
    return group_argmin(mine);
  }
};

template <class T, bool Maximize>
__global__ void __launch_bounds__(1024) lap_batch_kernel(const KernelParams<T> kp) {
  __shared__ Candidate<T> partial[2][32];
  extern __shared__ __align__(16) unsigned char column_state[];
  CudaBlock<T> blk{partial, 0};
  for (std::int64_t b = blockIdx.x; b < kp.batch; b += gridDim.x) {
    run_problem<T, Maximize>(blk, kp, b, column_state);
    __syncthreads();  // the next problem reuses nothing, but keep blocks in lock step
  }
}

/// out[b, c, r] = in[b, r, c] for a (batch, rows, cols) array: 32x32 tiles through shared memory.
template <class T>
__global__ void transpose_batch_kernel(const T* in, T* out, std::int64_t batch, std::int64_t rows,
                                       std::int64_t cols) {
  __shared__ T tile[32][33];
  const std::int64_t r0 = std::int64_t{blockIdx.y} * 32, c0 = std::int64_t{blockIdx.x} * 32;
  for (std::int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const T* src = in + b * rows * cols;
    T* dst = out + b * rows * cols;
    for (unsigned k = threadIdx.y; k < 32; k += blockDim.y) {
      const std::int64_t r = r0 + k, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[k][threadIdx.x] = src[r * cols + c];
    }
    __syncthreads();
    for (unsigned k = threadIdx.y; k < 32; k += blockDim.y) {
      const std::int64_t c = c0 + k, r = r0 + threadIdx.x;
      if (r < rows && c < cols) dst[c * rows + r] = tile[threadIdx.x][k];
    }
    __syncthreads();
  }
}

#endif  // __CUDACC__

}  // namespace trajtransfer::cuda::lapk

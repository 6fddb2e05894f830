// Batched driver: independent problems handed out one at a time to parallel::run_dynamic's
// threads, so problems of uneven difficulty balance themselves. Solves run there are
// single-threaded inside (see lap_parallel.hpp).
#include "lap/lap.hpp"
#include "lap/lap_parallel.hpp"
#include "parallel.hpp"

namespace trajtransfer::lap {

template <class T>
void solve_batch(const T* costs, std::int64_t batch, std::int64_t n, std::int64_t m, bool maximize,
                 std::int64_t* col_of_row, Status* status, int num_threads, bool exact) {
  const std::int64_t k = n < m ? n : m;
  // One solve per thread already uses the cores (and num_threads = 1 means one thread): the
  // solves inside do not split their passes over the helper thread.
  parallel::run_dynamic(
      batch, num_threads > 0 ? num_threads : parallel::hardware_threads(),
      [] { return detail::SingleThreadedSolves(); },
      [&](std::int64_t b) {
        Solution<T> out;
        out.col_of_row = col_of_row + b * k;
        status[b] = solve(costs + b * n * m, n, m, m, maximize, out, WarmStart<T>{}, exact);
      });
}

template void solve_batch<float>(const float*, std::int64_t, std::int64_t, std::int64_t, bool,
                                 std::int64_t*, Status*, int, bool);
template void solve_batch<double>(const double*, std::int64_t, std::int64_t, std::int64_t, bool,
                                  std::int64_t*, Status*, int, bool);

}  // namespace trajtransfer::lap

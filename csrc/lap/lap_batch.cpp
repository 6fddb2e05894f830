// Batched driver: independent problems handed out to a small pool of std::threads through an
// atomic counter, so problems of uneven difficulty balance themselves. Solves run by the pool are
// single-threaded inside (see lap_parallel.hpp).
#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "lap/lap.hpp"
#include "lap/lap_parallel.hpp"

namespace trajtransfer::lap {

template <class T>
void solve_batch(const T* costs, std::int64_t batch, std::int64_t n, std::int64_t m, bool maximize,
                 std::int64_t* col_of_row, Status* status, int num_threads, bool exact) {
  const std::int64_t k = std::min(n, m);
  std::atomic<std::int64_t> next{0};
  auto worker = [&]() {
    // One solve per thread already uses the cores (and num_threads = 1 means one thread):
    // the solves inside do not split their passes over the helper thread.
    const detail::SingleThreadedSolves one_thread_each;
    for (std::int64_t b = next.fetch_add(1); b < batch; b = next.fetch_add(1)) {
      Solution<T> out;
      out.col_of_row = col_of_row + b * k;
      status[b] = solve(costs + b * n * m, n, m, m, maximize, out, WarmStart<T>{}, exact);
    }
  };
  int threads =
      num_threads > 0 ? num_threads : static_cast<int>(std::thread::hardware_concurrency());
  threads =
      static_cast<int>(std::clamp<std::int64_t>(threads, 1, std::max<std::int64_t>(batch, 1)));
  if (threads == 1) {
    worker();
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads - 1));
  for (int t = 0; t < threads - 1; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

template void solve_batch<float>(const float*, std::int64_t, std::int64_t, std::int64_t, bool,
                                 std::int64_t*, Status*, int, bool);
template void solve_batch<double>(const double*, std::int64_t, std::int64_t, std::int64_t, bool,
                                  std::int64_t*, Status*, int, bool);

}  // namespace trajtransfer::lap

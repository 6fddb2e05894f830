// The solver's development profile (csrc/lap/lap_profile.hpp), built with -DTT_LAP_PROFILE and
// run by tests/test_lap_profile.py: the profiled build compiles, solves correctly (against brute
// force on small problems) and counts the phases that ran: a cold square float32 solve runs
// column minima, reduction transfer, ARR, the augmentation and the float64 check once each; a warm
// solve runs the greedy pass and no cold phase.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "lap/lap.hpp"
#include "lap/lap_profile.hpp"

using namespace trajtransfer::lap;
using profile::Event;
using profile::Phase;

namespace {

int g_failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s\n", what);
  }
}

double brute_force_min(const std::vector<float>& c, int n) {
  std::vector<int> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  double best = 1e300;
  do {
    double s = 0;
    for (int i = 0; i < n; ++i) s += c[static_cast<std::size_t>(i * n + p[i])];
    best = std::min(best, s);
  } while (std::next_permutation(p.begin(), p.end()));
  return best;
}

double total(const std::vector<float>& c, int n, const std::vector<std::int64_t>& col) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += c[static_cast<std::size_t>(i * n + col[i])];
  return s;
}

}  // namespace

int main() {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);

  // Correctness of the profiled build on small problems.
  for (int trial = 0; trial < 50; ++trial) {
    const int n = 2 + trial % 6;
    std::vector<float> c(static_cast<std::size_t>(n * n));
    for (auto& x : c) x = static_cast<float>(static_cast<int>(uni(gen) * 10));  // ties
    std::vector<std::int64_t> col(static_cast<std::size_t>(n));
    Solution<float> out;
    out.col_of_row = col.data();
    expect(solve<float>(c.data(), n, n, n, false, out, {}, true) == Status::ok, "small solve");
    expect(total(c, n, col) == brute_force_min(c, n), "small solve is optimal");
  }

  // A cold square float32 solve: each cold phase once.
  const int n = 400;
  std::vector<float> c(static_cast<std::size_t>(n) * n);
  for (auto& x : c) x = uni(gen);
  std::vector<std::int64_t> col(n);
  std::vector<float> u(n), v(n);
  Solution<float> out{col.data(), u.data(), v.data()};
  profile::reset();
  expect(solve<float>(c.data(), n, n, n, false, out, {}, true) == Status::ok, "cold solve");
  for (Phase p : {Phase::colmin, Phase::reduce, Phase::cold_arr, Phase::augment, Phase::verify}) {
    expect(profile::phase_runs(p) == 1, "a cold solve runs each cold phase once");
  }
  expect(profile::phase_runs(Phase::warm_pass) == 0, "a cold solve runs no warm pass");
  expect(profile::events(Event::arr_in) > 0, "rows enter ARR");
  expect(profile::events(Event::arr_steps) >= profile::events(Event::arr_in),
         "ARR examines every row that enters it");
  std::printf("cold solve, n = %d:\n", n);
  profile::dump(1);  // prints and resets

  // Warm from its own duals on slightly moved costs (multiplicative noise of at most 1 %, which
  // keeps an exact float32 warm start warm): the greedy pass, no cold phase.
  for (auto& x : c) x *= 1.0f + 0.02f * (uni(gen) - 0.5f);
  std::vector<std::int64_t> col2(n);
  Solution<float> out2{col2.data(), nullptr, nullptr};
  WarmStart<float> warm{v.data(), col.data()};
  expect(solve<float>(c.data(), n, n, n, false, out2, warm, true) == Status::ok, "warm solve");
  expect(profile::phase_runs(Phase::warm_pass) == 1, "a warm solve runs the greedy pass");
  expect(profile::phase_runs(Phase::colmin) == 0, "a warm solve that stays warm runs no cold phase");
  std::printf("warm solve:\n");
  profile::dump(1);

  std::printf("profile check: %d failures\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}

// trajtransfer._testing: native hooks only the test suite calls, kept out of _core (the user-facing
// extension) and out of release wheels (CMake option TRAJTRANSFER_TEST_MODULE).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "bindings/testing/register.hpp"
#include "match/py_random.hpp"

namespace py = pybind11;

namespace {

// The matcher's sweep orders come from this generator (match/py_random.hpp); the suite checks
// them against CPython's random module.
std::vector<std::vector<int>> python_shuffle_orders(std::uint64_t seed, int n, int sweeps) {
  trajtransfer::match::PyRandom rng(seed);
  std::vector<std::vector<int>> orders;
  for (int s = 0; s < sweeps; ++s) {
    std::vector<int> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    rng.shuffle(order);
    orders.push_back(order);
  }
  return orders;
}

}  // namespace

PYBIND11_MODULE(_testing, m) {
  m.doc() = "trajtransfer test hooks (not part of the API; absent from release wheels)";
  trajtransfer::bindings::testing::register_cuda_emulation(m);
  m.def("python_shuffle_orders", &python_shuffle_orders, py::arg("seed"), py::arg("n"),
        py::arg("sweeps"), "Orders random.Random(seed).shuffle gives list(range(n)), per sweep.");
}

// Bindings for the host emulation of the CUDA kernels (csrc/cuda/lap_emulation.hpp), in
// trajtransfer._testing: the GPU algorithm is tested against SciPy on machines without a GPU.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "bindings/array_helpers.hpp"
#include "bindings/gil.hpp"
#include "bindings/testing/register.hpp"
#include "cuda/lap_emulation.hpp"

namespace py = pybind11;

namespace trajtransfer::bindings::testing {
namespace {

template <class T>
py::tuple emulate_typed(const py::array& costs_obj, bool maximize, int block_threads,
                        const py::object& col_duals_obj, int shared_state, int arr_passes) {
  auto costs = require_array<T>(costs_obj, "costs", 3);
  const std::int64_t b = costs.shape(0), n = costs.shape(1), m = costs.shape(2);
  if (block_threads < 1 || block_threads > 1024) {
    throw py::value_error("block_threads must be in [1, 1024], got " +
                          std::to_string(block_threads));
  }
  py::array_t<std::int64_t> assignment({b, std::min(n, m)});
  py::array_t<std::int32_t> status(b);
  py::array_t<T> u({b, n}), v({b, m});
  cuda::LapBatchParams<T> prm;
  py::array_t<T> warm;
  if (!col_duals_obj.is_none()) {
    warm = require_array<T>(col_duals_obj, "col_duals", 2);
    if (warm.shape(0) != b || warm.shape(1) != m || n != m) {
      throw py::value_error("col_duals must have shape (B, m) = (" + std::to_string(b) + ", " +
                            std::to_string(m) + ") for square problems");
    }
    prm.col_duals_in = warm.data();
  }
  prm.cost = costs.data();
  prm.batch = b;
  prm.rows = n;
  prm.cols = m;
  prm.maximize = maximize;
  prm.assignment = assignment.mutable_data();
  prm.status = status.mutable_data();
  prm.row_duals = u.mutable_data();
  prm.col_duals = v.mutable_data();
  prm.block_threads = block_threads;
  prm.shared_state = shared_state;
  if (arr_passes < 0) throw py::value_error("row_reduction_passes must be >= 0");
  prm.row_reduction_passes = arr_passes;
  {
    // Safe: only raw pointers into the arrays held above cross into the emulated threads.
    ReleaseGil release;
    cuda::emulate_lap_batch<T>(prm);
  }
  return py::make_tuple(assignment, status, u, v);
}

}  // namespace

void register_cuda_emulation(py::module_& m) {
  m.def(
      "cuda_emulation_lap_batch",
      [](const py::array& costs, bool maximize, int block_threads, const py::object& col_duals,
         int shared_state, int arr_passes) {
        if (costs.dtype().is(py::dtype::of<float>())) {
          return emulate_typed<float>(costs, maximize, block_threads, col_duals, shared_state,
                                      arr_passes);
        }
        if (costs.dtype().is(py::dtype::of<double>())) {
          return emulate_typed<double>(costs, maximize, block_threads, col_duals, shared_state,
                                       arr_passes);
        }
        throw py::type_error("costs must have dtype float32 or float64, got " +
                             std::string(py::str(costs.dtype())));
      },
      py::arg("costs"), py::arg("maximize") = false, py::arg("block_threads") = 1,
      py::arg("col_duals") = py::none(), py::arg("shared_state") = -1,
      py::arg("row_reduction_passes") = 0,
      "Run the CUDA batched LAP kernel's code on the host, `block_threads` std::threads per "
      "problem (shared_state: 0 = per-column state in the batch workspace, else in a "
      "per-block buffer: the kernel's two placements; row_reduction_passes: JV augmenting row "
      "reduction passes). Returns (assignment (B, min(n, m)) int64, status (B,) int32 [0 ok, 1 invalid "
      "entries, 2 infeasible], row_duals (B, n), col_duals (B, m)).");
}

}  // namespace trajtransfer::bindings::testing

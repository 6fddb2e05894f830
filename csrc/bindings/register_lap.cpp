// Bindings for csrc/lap: single solves (with duals and warm start) and batched solves.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "bindings/array_helpers.hpp"
#include "bindings/register.hpp"
#include "lap/lap.hpp"

namespace py = pybind11;

namespace trajtransfer::bindings {
namespace {

using lap::Status;

const char* status_message(Status s) {
  switch (s) {
    case Status::invalid_entries:
      return "matrix contains invalid numeric entries";
    case Status::infeasible:
      return "cost matrix is infeasible";
    case Status::ok:
      break;
  }
  return "unknown solver status";
}

template <class T>
py::tuple solve_typed(const py::array& cost_obj, bool maximize, const py::object& col_duals_obj,
                      const py::object& init_obj) {
  auto cost = require_array<T>(cost_obj, "cost", 2);
  const std::int64_t n = cost.shape(0), m = cost.shape(1);
  const std::int64_t k = std::min(n, m);
  py::array_t<std::int64_t> cols(k);
  py::array_t<T> u(n), v(m);
  lap::Solution<T> out{cols.mutable_data(), u.mutable_data(), v.mutable_data()};
  lap::WarmStart<T> warm;
  py::array_t<T> vd;
  py::array_t<std::int64_t> init;
  if (!col_duals_obj.is_none()) {
    vd = require_array<T>(col_duals_obj, "col_duals", 1);
    if (vd.shape(0) != m) {
      throw py::value_error("col_duals must have shape (" + std::to_string(m) + ",), got (" +
                            std::to_string(vd.shape(0)) + ",)");
    }
    warm.col_duals = vd.data();
  }
  if (!init_obj.is_none()) {
    init = require_array<std::int64_t>(init_obj, "init_col_ind", 1);
    if (init.shape(0) != n) {
      throw py::value_error("init_col_ind must have shape (" + std::to_string(n) + ",), got (" +
                            std::to_string(init.shape(0)) + ",)");
    }
    if (warm.col_duals == nullptr) {
      throw py::value_error("init_col_ind needs col_duals from the same earlier solve");
    }
    warm.col_of_row = init.data();
  }
  Status st;
  {
    // Safe: every Python object has been converted to raw pointers that the arrays above own.
    py::gil_scoped_release release;
    st = lap::solve<T>(cost.data(), n, m, m, maximize, out, warm);
  }
  if (st != Status::ok) throw py::value_error(status_message(st));
  return py::make_tuple(cols, u, v);
}

template <class T>
py::array_t<std::int64_t> solve_batch_typed(const py::array& costs_obj, bool maximize,
                                            int num_threads) {
  auto costs = require_array<T>(costs_obj, "costs", 3);
  const std::int64_t b = costs.shape(0), n = costs.shape(1), m = costs.shape(2);
  py::array_t<std::int64_t> cols({b, std::min(n, m)});
  std::vector<Status> status(static_cast<std::size_t>(b), Status::ok);
  {
    // Safe: only raw pointers into arrays held above cross into the worker threads.
    py::gil_scoped_release release;
    lap::solve_batch<T>(costs.data(), b, n, m, maximize, cols.mutable_data(), status.data(),
                        num_threads);
  }
  for (std::int64_t i = 0; i < b; ++i) {
    if (status[i] != Status::ok) {
      throw py::value_error("problem " + std::to_string(i) + " of the batch: " +
                            status_message(status[i]));
    }
  }
  return cols;
}

template <class F32, class F64>
auto by_dtype(const py::array& a, F32 f32, F64 f64) {
  if (a.dtype().is(py::dtype::of<float>())) return f32();
  if (a.dtype().is(py::dtype::of<double>())) return f64();
  throw py::type_error("cost must have dtype float32 or float64, got " +
                       std::string(py::str(a.dtype())));
}

}  // namespace

void register_lap(py::module_& m) {
  m.def(
      "solve",
      [](const py::array& cost, bool maximize, const py::object& col_duals,
         const py::object& init_col_ind) {
        return by_dtype(
            cost, [&] { return solve_typed<float>(cost, maximize, col_duals, init_col_ind); },
            [&] { return solve_typed<double>(cost, maximize, col_duals, init_col_ind); });
      },
      py::arg("cost"), py::arg("maximize") = false, py::arg("col_duals") = py::none(),
      py::arg("init_col_ind") = py::none(),
      "Solve one dense LAP. Returns (idx, u, v): idx[k] indexes the longer axis for entry k of the "
      "shorter axis; u, v are duals of the minimisation actually solved (costs negated when "
      "maximize).");
  m.def("simd_level", &lap::simd_level,
        "SIMD kernel set chosen at run time for this CPU: 'avx512', 'avx2' or 'base'.");
  m.def(
      "solve_batch",
      [](const py::array& costs, bool maximize, int num_threads) {
        return by_dtype(
            costs, [&] { return solve_batch_typed<float>(costs, maximize, num_threads); },
            [&] { return solve_batch_typed<double>(costs, maximize, num_threads); });
      },
      py::arg("costs"), py::arg("maximize") = false, py::arg("num_threads") = 0,
      "Solve B dense LAPs of equal shape on a thread pool. Returns (B, min(n, m)) indices.");
}

}  // namespace trajtransfer::bindings

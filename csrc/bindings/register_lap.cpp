// Bindings for csrc/lap: single solves (with duals and warm start) and batched solves.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/array_helpers.hpp"
#include "bindings/gil.hpp"
#include "bindings/register.hpp"
#include "bindings/interrupt.hpp"
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
    case Status::interrupted:
      return "interrupted";
    case Status::ok:
      break;
  }
  return "unknown solver status";
}

// SciPy's (row_ind, col_ind) from the core's "index along the longer axis" output, built here
// rather than in Python: after a large solve has flushed the caches, each numpy call costs ~10 us.
py::tuple rows_cols(const std::vector<std::int64_t>& idx, std::int64_t n, std::int64_t m) {
  const std::int64_t k = static_cast<std::int64_t>(idx.size());
  py::array_t<std::int64_t> rows(k), cols(k);
  std::int64_t* r = rows.mutable_data();
  std::int64_t* c = cols.mutable_data();
  if (n <= m) {
    for (std::int64_t i = 0; i < k; ++i) {
      r[i] = i;
      c[i] = idx[static_cast<std::size_t>(i)];
    }
  } else {  // idx[j] is the row of column j: list the assigned rows in increasing order
    std::vector<std::int64_t> col_of(static_cast<std::size_t>(n), -1);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t i = idx[static_cast<std::size_t>(j)];
      if (i < 0 || i >= n) throw std::logic_error("LAP core returned an out-of-range row");
      col_of[static_cast<std::size_t>(i)] = j;
    }
    std::int64_t t = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      if (col_of[static_cast<std::size_t>(i)] < 0) continue;
      r[t] = i;
      c[t++] = col_of[static_cast<std::size_t>(i)];
    }
  }
  return py::make_tuple(rows, cols);
}

// The warm start's assignment as a column per row (-1: none) from SciPy-style pairs, checked.
std::vector<std::int64_t> assignment_from_pairs(const py::object& rows_obj,
                                                const py::object& cols_obj, std::int64_t n,
                                                std::int64_t m) {
  auto rows = require_array<std::int64_t>(rows_obj, "init_row_ind", 1);
  auto cols = require_array<std::int64_t>(cols_obj, "init_col_ind", 1);
  if (rows.shape(0) != cols.shape(0)) {
    throw py::value_error("init_row_ind and init_col_ind must have the same length, got " +
                          std::to_string(rows.shape(0)) + " and " +
                          std::to_string(cols.shape(0)));
  }
  std::vector<std::int64_t> col_of_row(static_cast<std::size_t>(n), -1);
  for (py::ssize_t t = 0; t < rows.shape(0); ++t) {
    const std::int64_t i = rows.data()[t], j = cols.data()[t];
    if (i < 0 || i >= n || j < 0 || j >= m) {
      throw py::value_error("warm-start pair (" + std::to_string(i) + ", " + std::to_string(j) +
                            ") lies outside a " + std::to_string(n) + " x " + std::to_string(m) +
                            " problem");
    }
    col_of_row[static_cast<std::size_t>(i)] = j;
  }
  return col_of_row;
}

template <class T>
py::tuple solve_typed(const py::array& cost_obj, bool maximize, const py::object& col_duals_obj,
                      const py::object& init_obj, const py::object& init_rows_obj, bool exact) {
  auto cost = require_array<T>(cost_obj, "cost", 2);
  const std::int64_t n = cost.shape(0), m = cost.shape(1);
  const std::int64_t k = std::min(n, m);
  std::vector<std::int64_t> cols(static_cast<std::size_t>(k));
  py::array_t<T> u(n), v(m);
  lap::Solution<T> out{cols.data(), u.mutable_data(), v.mutable_data()};
  lap::WarmStart<T> warm;
  py::array_t<T> vd;
  py::array_t<std::int64_t> init;
  std::vector<std::int64_t> init_pairs;
  if (!col_duals_obj.is_none()) {
    vd = require_array<T>(col_duals_obj, "col_duals", 1);
    if (vd.shape(0) != m) {
      throw py::value_error("col_duals must have shape (" + std::to_string(m) + ",), got (" +
                            std::to_string(vd.shape(0)) + ",)");
    }
    warm.col_duals = vd.data();
  }
  if (!init_obj.is_none()) {
    if (warm.col_duals == nullptr) {
      throw py::value_error("init_col_ind needs col_duals from the same earlier solve");
    }
    if (!init_rows_obj.is_none()) {
      init_pairs = assignment_from_pairs(init_rows_obj, init_obj, n, m);
      warm.col_of_row = init_pairs.data();
    } else {
      init = require_array<std::int64_t>(init_obj, "init_col_ind", 1);
      if (init.shape(0) != n) {
        throw py::value_error("init_col_ind must have shape (" + std::to_string(n) +
                              ",), got (" + std::to_string(init.shape(0)) + ",)");
      }
      warm.col_of_row = init.data();
    }
  } else if (!init_rows_obj.is_none()) {
    throw py::value_error("init_row_ind needs init_col_ind");
  }
  Status st;
  {
    InterruptScope interruptible;
    // Safe: every Python object has been converted to raw pointers that the arrays above own.
    ReleaseGil release;
    st = lap::solve<T>(cost.data(), n, m, m, maximize, out, warm, exact);
  }
  if (st == Status::interrupted) throw py::error_already_set();
  if (st != Status::ok) throw py::value_error(status_message(st));
  py::tuple rc = rows_cols(cols, n, m);
  return py::make_tuple(rc[0], rc[1], u, v);
}

template <class T>
py::array_t<std::int64_t> solve_batch_typed(const py::array& costs_obj, bool maximize,
                                            int num_threads, bool exact) {
  auto costs = require_array<T>(costs_obj, "costs", 3);
  const std::int64_t b = costs.shape(0), n = costs.shape(1), m = costs.shape(2);
  py::array_t<std::int64_t> cols({b, std::min(n, m)});
  std::vector<Status> status(static_cast<std::size_t>(b), Status::ok);
  {
    // Safe: only raw pointers into arrays held above cross into the worker threads.
    ReleaseGil release;
    lap::solve_batch<T>(costs.data(), b, n, m, maximize, cols.mutable_data(), status.data(),
                        num_threads, exact);
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
         const py::object& init_col_ind, const py::object& init_row_ind, bool exact) {
        const auto solve_as = [&](auto zero) {
          using T = decltype(zero);
          return solve_typed<T>(cost, maximize, col_duals, init_col_ind, init_row_ind, exact);
        };
        return by_dtype(
            cost, [&] { return solve_as(0.0f); }, [&] { return solve_as(0.0); });
      },
      py::arg("cost"), py::arg("maximize") = false, py::arg("col_duals") = py::none(),
      py::arg("init_col_ind") = py::none(), py::arg("init_row_ind") = py::none(),
      py::arg("exact") = true,
      "Solve one dense LAP. Returns (row_ind, col_ind, u, v) as scipy's linear_sum_assignment plus "
      "the duals of the minimisation actually solved (costs negated when maximize). The warm "
      "start's assignment is init_col_ind (a column per row, -1 for none) or, with init_row_ind, "
      "the pairs (init_row_ind[t], init_col_ind[t]) of an earlier solve. exact (float32 only): "
      "the assignment is optimal for the float64 values of the entries; else within about one "
      "float32 rounding per row.");
  m.def(
      "last_solve_stats",
      [] {
        const lap::SolveStats st = lap::last_solve_stats();
        py::dict d;
        d["paths"] = st.paths;
        d["path_scans"] = st.path_scans;
        d["arr_scans"] = st.arr_scans;
        d["cold_restarts"] = st.cold_restarts;
        d["warm_rows_read"] = st.warm_rows_read;
        return d;
      },
      "Work counters of this thread's most recent single solve: {'paths': shortest augmenting "
      "paths searched, 'path_scans': their O(m) row scans, 'arr_scans': full row scans of "
      "augmenting row reduction, 'cold_restarts': 1 when a warm start was given up for a cold "
      "solve, 'warm_rows_read': rows its first pass read}. For tests and profiling.");
  m.def("simd_level", &lap::simd_level,
        "SIMD kernel set chosen at run time for this CPU: 'avx512', 'avx2' or 'base'.");
  m.def(
      "solve_batch",
      [](const py::array& costs, bool maximize, int num_threads, bool exact) {
        return by_dtype(
            costs, [&] { return solve_batch_typed<float>(costs, maximize, num_threads, exact); },
            [&] { return solve_batch_typed<double>(costs, maximize, num_threads, exact); });
      },
      py::arg("costs"), py::arg("maximize") = false, py::arg("num_threads") = 0,
      py::arg("exact") = true,
      "Solve B dense LAPs of equal shape on a thread pool. Returns (B, min(n, m)) indices. exact "
      "as in solve().");
}

}  // namespace trajtransfer::bindings

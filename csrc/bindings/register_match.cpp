// Bindings for csrc/match: the native matcher object and BLAS thread control.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/array_helpers.hpp"
#include "bindings/gil.hpp"
#include "bindings/interrupt.hpp"
#include "bindings/register.hpp"
#include "match/matcher.hpp"

namespace py = pybind11;

namespace trajtransfer::bindings {
namespace {

using match::Error;
using match::Status;

[[noreturn]] void raise(const Error& e, const char* what) {
  const std::string idx = std::to_string(e.index), ax = std::to_string(e.axis);
  switch (e.status) {
    case Status::bad_spec:
      throw py::value_error(std::string(what) + ": tensor #" + idx + " axis " + ax +
                            " names an unknown group or repeats a group already on another axis");
    case Status::size_mismatch:
      throw py::value_error(std::string(what) + ": tensor #" + idx + " axis " + ax +
                            " does not match its group's size");
    case Status::non_finite:
      throw py::value_error(std::string(what) + ": tensor #" + idx +
                            " contains NaN or infinite values");
    case Status::bad_init:
      throw py::value_error(std::string(what) + ": init for group #" + idx +
                            " is not a permutation of the group's size");
    case Status::no_pairs:
      throw py::value_error(std::string(what) + ": no pairs added yet");
    case Status::lap_failed:
      throw py::value_error(std::string(what) + ": assignment solver failed on group #" + idx +
                            " (invalid cost entries)");
    case Status::bad_argument:
      throw py::value_error(std::string(what) + ": invalid argument (max_sweeps >= 0, tol >= 0, "
                            "finite weight required)");
    case Status::bad_factors:
      throw py::value_error(std::string(what) + ": tensor #" + idx +
                            " comes as factors, but is not (n_out, n_in) up to unpermuted "
                            "trailing axes of size 1, or is factored on one side only");
    case Status::interrupted:
      throw py::error_already_set();  // the KeyboardInterrupt that InterruptScope's poll set
    case Status::ok:
      break;
  }
  throw py::value_error(std::string(what) + ": unknown matcher status");
}

/// Data pointer of `h` when it is exactly a C-contiguous float32 numpy array of `shape` (the
/// matcher's fast path: GradientMatcher.add passes such views), else null. No allocation.
const float* exact_float_array(py::handle h, const std::vector<std::int64_t>& shape) {
  if (!py::array_t<float, py::array::c_style>::check_(h)) return nullptr;
  const auto* a = py::detail::array_proxy(h.ptr());
  if (a->nd != static_cast<int>(shape.size())) return nullptr;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (a->dimensions[d] != shape[d]) return nullptr;
  }
  return reinterpret_cast<const float*>(a->data);
}

class PyMatcher {
 public:
  PyMatcher(const std::vector<std::int64_t>& group_sizes,
            const std::vector<std::vector<std::int64_t>>& shapes,
            const std::vector<std::vector<int>>& axis_groups) {
    if (shapes.size() != axis_groups.size()) {
      throw py::value_error("shapes and axis_groups must have the same length");
    }
    std::vector<match::TensorSpec> specs(shapes.size());
    for (std::size_t t = 0; t < shapes.size(); ++t) {
      specs[t].shape = shapes[t];
      specs[t].groups = axis_groups[t];
    }
    const Error e = match::Matcher::create(group_sizes, std::move(specs), impl_);
    if (!e.ok()) raise(e, "Matcher");
    shapes_ = shapes;
  }

  void add(const py::list& targets, const py::list& sources, double weight) {
    check_usable();
    const std::size_t T = shapes_.size();
    if (targets.size() != T || sources.size() != T) {
      throw py::value_error("add: expected " + std::to_string(T) + " target and source arrays");
    }
    std::vector<py::object> keep;  // the arrays stay alive while the GIL is released
    keep.reserve(4 * T);
    std::vector<match::TensorInput> tp(T), sp(T);
    for (int side = 0; side < 2; ++side) {
      const py::list& lst = side == 0 ? targets : sources;
      for (std::size_t t = 0; t < T; ++t) {
        py::handle h = lst[t];
        const std::string name =
            std::string(side == 0 ? "target" : "source") + " #" + std::to_string(t);
        match::TensorInput& in = (side == 0 ? tp : sp)[t];
        if (py::isinstance<py::tuple>(h)) {
          factors(py::reinterpret_borrow<py::tuple>(h), t, name, in, keep);
          continue;
        }
        in.dense = exact_float_array(h, shapes_[t]);
        if (in.dense == nullptr) {  // not as expected: the checked path names the problem
          auto a = require_array<float>(h, name.c_str(),
                                        static_cast<py::ssize_t>(shapes_[t].size()));
          for (std::size_t d = 0; d < shapes_[t].size(); ++d) {
            if (a.shape(static_cast<py::ssize_t>(d)) != shapes_[t][d]) {
              throw py::value_error(name + " axis " + std::to_string(d) + " has size " +
                                    std::to_string(a.shape(static_cast<py::ssize_t>(d))) +
                                    ", expected " + std::to_string(shapes_[t][d]));
            }
          }
          in.dense = a.data();
        }
        keep.push_back(py::reinterpret_borrow<py::object>(h));
      }
    }
    Error e;
    {
      // Safe: only raw pointers into arrays kept alive by `keep` cross the release.
      ReleaseGil release;
      e = impl_->add(tp.data(), sp.data(), weight);
    }
    if (!e.ok()) raise(e, "add");
  }

  py::dict solve(const py::object& init, bool use_previous, bool warm_duals, int max_sweeps,
                 double tol, std::uint64_t seed, bool exact_objective, bool greedy_start) {
    check_usable();
    const std::size_t G = static_cast<std::size_t>(impl_->num_groups());
    std::vector<py::array_t<std::int64_t>> keep;
    std::vector<const std::int64_t*> ip;
    if (!init.is_none()) {
      auto lst = init.cast<py::list>();
      if (lst.size() != G) {
        throw py::value_error("init must hold one permutation per group (" + std::to_string(G) +
                              ")");
      }
      for (std::size_t g = 0; g < G; ++g) {
        const std::string name = "init #" + std::to_string(g);
        auto a = require_array<std::int64_t>(lst[g], name.c_str(), 1);
        if (a.shape(0) != impl_->group_size(static_cast<std::int64_t>(g))) {
          throw py::value_error(name + " has length " + std::to_string(a.shape(0)) +
                                ", expected " +
                                std::to_string(impl_->group_size(static_cast<std::int64_t>(g))));
        }
        ip.push_back(a.data());
        keep.push_back(std::move(a));
      }
    }
    match::SolveOptions opts;
    opts.max_sweeps = max_sweeps;
    opts.tol = tol;
    opts.seed = seed;
    opts.warm_duals = warm_duals;
    opts.exact_objective = exact_objective;
    opts.greedy_start = greedy_start;
    match::SolveResult res;
    Error e;
    {
      InterruptScope interruptible;
      // Safe: the solve reads only the matcher's own buffers and the init arrays held in `keep`.
      ReleaseGil release;
      e = impl_->solve(ip.empty() ? nullptr : ip.data(), use_previous, opts, res);
    }
    if (!e.ok()) raise(e, "solve");
    py::list perms;
    for (const auto& p : res.perms) {
      py::array_t<std::int64_t> a(static_cast<py::ssize_t>(p.size()));
      std::copy(p.begin(), p.end(), a.mutable_data());
      perms.append(a);
    }
    py::dict d;
    d["perms"] = perms;
    d["objective"] = res.objective;
    d["history"] = res.history;
    d["sweeps"] = res.sweeps;
    d["converged"] = res.converged;
    d["gemm"] = res.time_gemm;
    d["lap"] = res.time_lap;
    d["total"] = res.time_total;
    d["lap_solves"] = res.lap_solves;
    d["lap_unchanged"] = res.lap_unchanged;
    d["member_builds"] = res.member_builds;
    d["delta_builds"] = res.delta_builds;
    d["gemm_flops"] = res.gemm_flops;
    d["static_gemm"] = res.time_static_gemm;
    d["static_gemm_flops"] = res.static_gemm_flops;
    return d;
  }

  double objective(const py::list& perms) {
    check_usable();
    const std::size_t G = static_cast<std::size_t>(impl_->num_groups());
    if (perms.size() != G) throw py::value_error("objective: one permutation per group expected");
    std::vector<std::vector<std::int64_t>> p(G);
    for (std::size_t g = 0; g < G; ++g) {
      auto a = require_array<std::int64_t>(perms[g], "perm", 1);
      const std::int64_t n = impl_->group_size(static_cast<std::int64_t>(g));
      if (a.shape(0) != n) throw py::value_error("objective: wrong permutation length");
      p[g].assign(a.data(), a.data() + n);
      std::vector<char> seen(static_cast<std::size_t>(n), 0);
      for (std::int64_t v : p[g]) {
        if (v < 0 || v >= n || seen[static_cast<std::size_t>(v)]) {
          throw py::value_error("objective: not a permutation");
        }
        seen[static_cast<std::size_t>(v)] = 1;
      }
    }
    if (impl_->num_pairs() == 0) return 0.0;
    ReleaseGil release;  // Safe: reads the matcher's own buffers and `p` only.
    return impl_->objective(p);
  }

  void reserve(const BigInt& pairs) {
    check_usable();
    const long long k =
        pairs.in_range("reserve: num_pairs", 0, std::numeric_limits<std::int64_t>::max(),
                       ">= 0 and < 2**63");
    ReleaseGil release;  // Safe: touches only the matcher's own buffers.
    impl_->reserve(static_cast<std::int64_t>(k));
  }

  void clear_pairs() {
    check_usable();
    ReleaseGil release;  // Safe: touches only the matcher's own buffers.
    impl_->clear_pairs();
  }

  std::int64_t num_pairs() const { return impl_->num_pairs(); }

 private:
  /// A (delta, inputs) tuple for tensor t: float32 C-contiguous (rows, n_out) and (rows, n_in)
  /// for the tensor's shape (n_out, n_in, ...); the matcher checks that t takes factors.
  void factors(const py::tuple& pair, std::size_t t, const std::string& name,
               match::TensorInput& in, std::vector<py::object>& keep) const {
    const std::vector<std::int64_t>& shape = shapes_[t];
    if (pair.size() != 2 || shape.size() < 2) {
      throw py::value_error(name + ": a tuple must be (delta, inputs) factors of a tensor of 2 "
                            "or more axes");
    }
    std::int64_t n_in = 1;
    for (std::size_t d = 1; d < shape.size(); ++d) n_in *= shape[d];
    const std::int64_t want[2] = {shape[0], n_in};
    const char* what[2] = {" delta", " inputs"};
    std::int64_t rows = -1;
    for (int i = 0; i < 2; ++i) {
      const std::string label = name + what[i];
      auto a = require_array<float>(pair[static_cast<std::size_t>(i)], label.c_str(), 2);
      if (a.shape(1) != want[i] || (rows >= 0 && a.shape(0) != rows)) {
        throw py::value_error(label + " has shape (" + std::to_string(a.shape(0)) + ", " +
                              std::to_string(a.shape(1)) + "), expected (" +
                              (rows >= 0 ? std::to_string(rows) : std::string("rows")) + ", " +
                              std::to_string(want[i]) + ")");
      }
      rows = a.shape(0);
      (i == 0 ? in.delta : in.inputs) = a.data();
      keep.push_back(std::move(a));
    }
    in.rows = rows;
  }

  void check_usable() const {
    if (impl_->forked_mid_call()) {
      throw std::runtime_error(
          "this matcher was in use by another thread when the process forked, so its copy in "
          "this child holds a half-done update; create a new matcher in the child");
    }
  }

  std::unique_ptr<match::Matcher> impl_;
  std::vector<std::vector<std::int64_t>> shapes_;
};

}  // namespace

void register_match(py::module_& m) {
  py::class_<PyMatcher>(m, "Matcher", "Native coordinate-descent matcher (private; see "
                                      "trajtransfer.match)")
      .def(py::init<const std::vector<std::int64_t>&, const std::vector<std::vector<std::int64_t>>&,
                    const std::vector<std::vector<int>>&>(),
           py::arg("group_sizes"), py::arg("shapes"), py::arg("axis_groups"))
      .def("add", &PyMatcher::add, py::arg("targets"), py::arg("sources"), py::arg("weight"),
           "Append one pair: per tensor a float32 array, or a (delta, inputs) tuple of float32 "
           "arrays (rows, n_out) and (rows, n_in) for the factors of delta.T @ inputs.")
      .def("solve", &PyMatcher::solve, py::arg("init"), py::arg("use_previous"),
           py::arg("warm_duals"), py::arg("max_sweeps"), py::arg("tol"), py::arg("seed"),
           py::arg("exact_objective") = true, py::arg("greedy_start") = false)
      .def("objective", &PyMatcher::objective, py::arg("perms"))
      .def("reserve", &PyMatcher::reserve, py::arg("pairs"))
      .def("clear_pairs", &PyMatcher::clear_pairs,
           "Drop all pairs; keep the store's memory, the permutations and the LAP duals.")
      .def_property_readonly("num_pairs", &PyMatcher::num_pairs);
  m.def(
      "set_num_threads",
      [](const BigInt& num_threads) {
        const long long n = num_threads.in_range(
            "num_threads", std::numeric_limits<long long>::min(), std::numeric_limits<int>::max(),
            "at most " + std::to_string(std::numeric_limits<int>::max()) + " (<= 0 queries)");
        return match::set_blas_threads(static_cast<int>(std::max(n, 0LL)));
      },
      py::arg("num_threads"),
        "Set the threads of trajtransfer's OpenBLAS pool (<= 0: unchanged); returns the count.");
}

}  // namespace trajtransfer::bindings

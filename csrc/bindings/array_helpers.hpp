// Boundary checks shared by the binding files: the Python layer has already normalised inputs,
// these re-checks turn anything that slipped through into TypeError/ValueError, never a crash.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace trajtransfer::bindings {

namespace py = pybind11;

inline bool is_c_contiguous(const py::array& a) {
  return (a.flags() & py::array::c_style) != 0;
}

/// Require a C-contiguous array of exactly dtype T with the given number of dimensions.
template <class T>
py::array_t<T> require_array(const py::handle& obj, const char* name, py::ssize_t ndim) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy array");
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(name) + " must have dtype " +
                         std::string(py::str(py::dtype::of<T>())) + ", got " +
                         std::string(py::str(a.dtype())));
  }
  if (!is_c_contiguous(a)) {
    throw py::value_error(std::string(name) + " must be C-contiguous");
  }
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                          "-dimensional, got " + std::to_string(a.ndim()) + " dimensions");
  }
  return py::reinterpret_borrow<py::array_t<T>>(a);
}

}  // namespace trajtransfer::bindings

// Boundary checks shared by the binding files: the Python layer has already normalised inputs,
// these re-checks turn anything that slipped through into TypeError/ValueError, never a crash.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace trajtransfer::bindings {

namespace py = pybind11;

/// An integer argument taken whole, so that the binding can range-check it and raise ValueError
/// naming it: pybind11's own int casters reject an out-of-range int as "incompatible arguments".
struct BigInt {
  long long value = 0;
  bool overflow = false;  ///< outside long long: `value` is meaningless
  std::string text;       ///< str() of the Python int, for messages

  /// The value when it lies in [lo, hi], else ValueError "<name> must be <rule>, got <value>".
  long long in_range(const char* name, long long lo, long long hi, const std::string& rule) const {
    if (overflow || value < lo || value > hi) {
      throw py::value_error(std::string(name) + " must be " + rule + ", got " + text);
    }
    return value;
  }
};

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

namespace pybind11::detail {

// Accepts what the int casters accept (int, numpy integers, __index__; __int__ when converting)
// and shows the same annotation in signatures and stubs.
template <>
struct type_caster<trajtransfer::bindings::BigInt> {
  PYBIND11_TYPE_CASTER(trajtransfer::bindings::BigInt,
                       const_name("typing.SupportsInt | typing.SupportsIndex"));

  bool load(handle src, bool convert) {
    if (!src || PyFloat_Check(src.ptr())) return false;
    const bool has_index = PyIndex_Check(src.ptr()) != 0;
    if (!has_index && !convert) return false;
    object index = reinterpret_steal<object>(has_index ? PyNumber_Index(src.ptr())
                                                       : PyNumber_Long(src.ptr()));
    if (!index) {
      PyErr_Clear();
      return false;
    }
    int overflow = 0;
    value.value = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    value.overflow = overflow != 0;
    value.text = str(index);
    return true;
  }

  static handle cast(const trajtransfer::bindings::BigInt& v, return_value_policy, handle) {
    return PyLong_FromLongLong(v.value);
  }
};

}  // namespace pybind11::detail

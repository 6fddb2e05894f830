// Registration functions of trajtransfer._testing; testing/module.cpp wires them in.
#pragma once

#include <pybind11/pybind11.h>

namespace trajtransfer::bindings::testing {

void register_cuda_emulation(pybind11::module_& m);

}  // namespace trajtransfer::bindings::testing

// One registration function per area of the extension; module.cpp wires them into submodules.
#pragma once

#include <pybind11/pybind11.h>

namespace trajtransfer::bindings {

void register_lap(pybind11::module_& m);
void register_match(pybind11::module_& m);
#ifdef TRAJTRANSFER_WITH_CUDA
void register_cuda(pybind11::module_& m);
#endif

}  // namespace trajtransfer::bindings

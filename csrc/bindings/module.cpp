// trajtransfer._core: the private extension. Each submodule mirrors a Python module of the package.
#include <pybind11/pybind11.h>

#include "bindings/register.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "trajtransfer native core (private; use the trajtransfer package API)";
  m.attr("__version__") = TRAJTRANSFER_VERSION;
#ifdef TRAJTRANSFER_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  auto lap = m.def_submodule("lap", "Dense exact linear assignment");
  trajtransfer::bindings::register_lap(lap);
  auto match = m.def_submodule("match", "Coordinate-descent permutation matching");
  trajtransfer::bindings::register_match(match);
#ifdef TRAJTRANSFER_WITH_CUDA
  auto cuda = m.def_submodule("cuda", "CUDA kernels on raw device pointers and streams");
  trajtransfer::bindings::register_cuda(cuda);
#endif
}

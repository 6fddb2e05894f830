// Releasing the GIL around native work: every binding file uses ReleaseGil, never
// py::gil_scoped_release, so that a daemon thread still inside a call when the interpreter
// exits cannot abort the process.
#pragma once

#include <pybind11/pybind11.h>

#include "parallel.hpp"

namespace trajtransfer::bindings {

/// Releases the GIL for its scope, like py::gil_scoped_release, except at interpreter exit.
///
/// Before 3.14, PyEval_RestoreThread in a thread other than the finalising one calls
/// PyThread_exit_thread, i.e. pthread_exit, which on glibc unwinds the stack with a forced-unwind
/// exception. Through gil_scoped_release's (noexcept) destructor that is std::terminate (rc 134);
/// let through, it would run our frames' destructors, which Py_DECREF arrays without the GIL.
/// So the unwind is caught right here and the thread parks instead, as CPython 3.14+ itself does
/// (PyThread_hang_thread): it never touches Python again and holds no lock of ours (every
/// release scope wraps the native call only).
class ReleaseGil {
 public:
  ReleaseGil() {
    // As gil_scoped_release: initialise pybind11's internals while the GIL is still held.
    (void)pybind11::detail::get_internals();
    tstate_ = PyEval_SaveThread();
  }
  ~ReleaseGil() {
    try {
      PyEval_RestoreThread(tstate_);
    } catch (...) {  // only glibc's forced unwind from pthread_exit can arrive here
      parallel::park_until_exit();
    }
  }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  PyThreadState* tstate_ = nullptr;
};

}  // namespace trajtransfer::bindings

// Ctrl-C during a long native call: the solvers poll for it (lap::set_interrupt_poll), so a
// KeyboardInterrupt arrives within about kInterruptPollMs instead of when the call returns.
#pragma once

#include <pybind11/pybind11.h>

#include "lap/lap.hpp"

namespace trajtransfer::bindings {

/// For its scope, lets the calling thread's solves stop on a pending signal. Construct it with
/// the GIL held, before the GIL is released. Only the main thread gets a poll: Python runs signal
/// handlers there alone, and other threads (daemons at exit included) never take the GIL back
/// mid-solve. After a solve reports Status::interrupted, `throw pybind11::error_already_set()`
/// raises the KeyboardInterrupt that the poll left set.
class InterruptScope {
 public:
  InterruptScope() {
    auto threading = pybind11::module_::import("threading");
    const auto main_ident = threading.attr("main_thread")().attr("ident").cast<unsigned long>();
    if (main_ident == PyThread_get_thread_ident()) {
      previous_ = lap::set_interrupt_poll(&poll);
      active_ = true;
    }
  }
  ~InterruptScope() {
    if (active_) lap::set_interrupt_poll(previous_);
  }
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  static bool poll() {
    const PyGILState_STATE gil = PyGILState_Ensure();
    const bool stop = PyErr_CheckSignals() != 0;  // runs the handler; KeyboardInterrupt stays set
    PyGILState_Release(gil);
    return stop;
  }

  lap::InterruptPoll previous_ = nullptr;
  bool active_ = false;
};

}  // namespace trajtransfer::bindings

// Bindings for csrc/cuda: device pointers and streams cross from Python as integers
// (torch's data_ptr() and current_stream().cuda_stream); no libtorch, no tensor types here.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

#include "bindings/gil.hpp"
#include "bindings/register.hpp"
#include "cuda/lap_cuda.hpp"

namespace py = pybind11;

namespace trajtransfer::bindings {
namespace {

template <class T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);  // NOLINT(performance-no-int-to-ptr): from data_ptr()
}

template <class T>
void lap_batch_typed(std::uintptr_t cost, std::int64_t batch, std::int64_t rows,
                     std::int64_t cols, bool maximize, std::uintptr_t assignment,
                     std::uintptr_t status, std::uintptr_t stream, std::uintptr_t col_duals_in,
                     std::uintptr_t row_duals, std::uintptr_t col_duals, int block_threads,
                     int shared_state, int arr_passes) {
  cuda::LapBatchParams<T> prm;
  prm.cost = as_ptr<const T>(cost);
  prm.batch = batch;
  prm.rows = rows;
  prm.cols = cols;
  prm.maximize = maximize;
  prm.col_duals_in = as_ptr<const T>(col_duals_in);
  prm.assignment = as_ptr<std::int64_t>(assignment);
  prm.status = as_ptr<std::int32_t>(status);
  prm.row_duals = as_ptr<T>(row_duals);
  prm.col_duals = as_ptr<T>(col_duals);
  prm.block_threads = block_threads;
  prm.shared_state = shared_state;
  prm.row_reduction_passes = arr_passes;
  // Safe: no Python object is touched; the launch only enqueues work on `stream`.
  ReleaseGil release;
  cuda::lap_batch<T>(prm, reinterpret_cast<cudaStream_t>(stream));  // NOLINT: stream handle
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def(
      "lap_batch",
      [](std::uintptr_t cost, const std::string& dtype, std::int64_t batch, std::int64_t rows,
         std::int64_t cols, bool maximize, std::uintptr_t assignment, std::uintptr_t status,
         std::uintptr_t stream, std::uintptr_t col_duals_in, std::uintptr_t row_duals,
         std::uintptr_t col_duals, int block_threads, int shared_state, int arr_passes) {
        if (dtype == "float32") {
          lap_batch_typed<float>(cost, batch, rows, cols, maximize, assignment, status, stream,
                                 col_duals_in, row_duals, col_duals, block_threads, shared_state,
                                 arr_passes);
        } else if (dtype == "float64") {
          lap_batch_typed<double>(cost, batch, rows, cols, maximize, assignment, status, stream,
                                  col_duals_in, row_duals, col_duals, block_threads, shared_state,
                                 arr_passes);
        } else {
          throw py::type_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
        }
      },
      py::arg("cost"), py::arg("dtype"), py::arg("batch"), py::arg("rows"), py::arg("cols"),
      py::arg("maximize"), py::arg("assignment"), py::arg("status"), py::arg("stream"),
      py::arg("col_duals_in") = 0, py::arg("row_duals") = 0, py::arg("col_duals") = 0,
      py::arg("block_threads") = 0, py::arg("shared_state") = -1,
      py::arg("row_reduction_passes") = 0,
      "Enqueue B dense LAPs on `stream` (all pointers are device addresses as integers, 0 = "
      "absent): cost (B, rows, cols) C-contiguous of `dtype`; writes assignment (B, min(rows, "
      "cols)) int64 and status (B,) int32 [0 ok, 1 invalid entries, 2 infeasible]; optional "
      "warm-start col_duals_in (B, cols) (square only) and dual outputs row_duals (B, rows), "
      "col_duals (B, cols); block_threads (0 = auto) and shared_state (-1 auto, 0 global, "
      "1 shared memory for the per-column state) and row_reduction_passes (JV augmenting row "
      "reduction, 0 = off) are tuning knobs. Asynchronous: read status after synchronising the "
      "stream.");
  m.def(
      "device_count",
      [] {
        int count = 0;
        // cudaErrorNoDevice / an absent driver mean "no device", not an error, for this query.
        if (cudaGetDeviceCount(&count) != cudaSuccess) {
          (void)cudaGetLastError();
          return 0;
        }
        return count;
      },
      "Number of CUDA devices visible to the extension's runtime (0 when there is none).");
}

}  // namespace trajtransfer::bindings

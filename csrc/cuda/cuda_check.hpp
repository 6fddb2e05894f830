// Throwing check macros for the CUDA sources (style habit 11).
//
// TT_CUDA_TRY(call)   : evaluate a CUDA runtime call; throw tt_cuda::cuda_error with file:line and
//                       the runtime's own error string when it does not return cudaSuccess.
// TT_CHECK_LAUNCH()   : check the launch that just happened (cudaGetLastError).
// TT_EXPECTS(cond, m) : precondition; throw std::invalid_argument with file:line (ValueError in
//                       Python) when cond is false.
#pragma once

#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

namespace trajtransfer::cuda {

/// A CUDA runtime failure (RuntimeError in Python).
struct cuda_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] inline void throw_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  throw cuda_error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" +
                   cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line) + ": " +
                   expr);
}
[[noreturn]] inline void throw_expects(const char* msg, const char* file, int line) {
  throw std::invalid_argument(std::string(msg) + " (" + file + ":" + std::to_string(line) + ")");
}
}  // namespace detail

}  // namespace trajtransfer::cuda

#define TT_CUDA_TRY(call)                                                              \
  do {                                                                                 \
    const cudaError_t tt_err_ = (call);                                                \
    if (tt_err_ != cudaSuccess) {                                                      \
      ::trajtransfer::cuda::detail::throw_cuda(tt_err_, #call, __FILE__, __LINE__);    \
    }                                                                                  \
  } while (0)

#define TT_CHECK_LAUNCH() TT_CUDA_TRY(cudaGetLastError())

#define TT_EXPECTS(cond, msg)                                                   \
  do {                                                                          \
    if (!(cond)) ::trajtransfer::cuda::detail::throw_expects(msg, __FILE__, __LINE__); \
  } while (0)

// Host API of the batched LAP on the GPU. Python-free: device pointers, sizes and a stream.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/lap_params.hpp"

namespace trajtransfer::cuda {

/// Solve `prm.batch` dense LAPs on the device, asynchronously on `stream`.
///
/// One thread block per problem (see lap_kernel.cuh). Problems with rows > cols are transposed
/// into scratch memory first. Scratch memory is stream-ordered (cudaMallocAsync/cudaFreeAsync),
/// so nothing here synchronises with the host; read `prm.status` after the stream has finished.
///
/// @param prm     sizes, device pointers (cost (B, n, m), assignment (B, min(n, m)) int64, status
///                (B,) int32, optional duals) and options; see LapBatchParams
/// @param stream  the stream every launch and allocation is ordered on (the caller's, e.g. torch's
///                current stream)
/// @throws std::invalid_argument for inconsistent parameters, cuda_error for a runtime failure
template <class T>
void lap_batch(const LapBatchParams<T>& prm, cudaStream_t stream);

extern template void lap_batch<float>(const LapBatchParams<float>&, cudaStream_t);
extern template void lap_batch<double>(const LapBatchParams<double>&, cudaStream_t);

}  // namespace trajtransfer::cuda

// Explicit instantiation of the batched LAP for float (one dtype per file: parallel compilation).
#include "cuda/lap_launch.cuh"

namespace trajtransfer::cuda {
template void lap_batch<float>(const LapBatchParams<float>&, cudaStream_t);
}  // namespace trajtransfer::cuda

// Explicit instantiation of the batched LAP for double (one dtype per file: parallel compilation).
#include "cuda/lap_launch.cuh"

namespace trajtransfer::cuda {
template void lap_batch<double>(const LapBatchParams<double>&, cudaStream_t);
}  // namespace trajtransfer::cuda

// Host emulation of the batched GPU LAP: the kernel's templated code (lap_kernel.cuh) run by a
// block of std::threads with real barriers. For tests on machines without a GPU; not fast.
#pragma once

#include "cuda/lap_params.hpp"

namespace trajtransfer::cuda {

/// Run the GPU algorithm on host memory, problem after problem, each by `prm.block_threads`
/// (>= 1, any count; 0 = 1) host threads executing the kernel's phases between barriers.
///
/// `prm.shared_state` != 0 puts the per-column state in a per-block buffer (the kernel's shared
/// memory), 0 in the batch workspace, as on the device.
///
/// Emulated faithfully: the per-thread column partition, every barrier, the double-buffered
/// block reductions and the atomics. Not emulated: warps (a "group" is one thread here, a warp on
/// the device), and transposition (done through strides instead of a transposed copy).
///
/// @param prm  host pointers; same contract as lap_batch() in lap_cuda.hpp
/// @throws std::invalid_argument for inconsistent parameters
template <class T>
void emulate_lap_batch(const LapBatchParams<T>& prm);

extern template void emulate_lap_batch<float>(const LapBatchParams<float>&);
extern template void emulate_lap_batch<double>(const LapBatchParams<double>&);

}  // namespace trajtransfer::cuda

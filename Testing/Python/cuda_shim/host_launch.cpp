// Test-only: the host launcher for projector.cu (see cuda_host_shim.h). Runs the grid's blocks in
// parallel (OpenMP when available) and each block's threads one after another.
#include "cuda_host_shim.h"

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

#include "projector.cu"

extern "C" void shim_drr_joseph(unsigned int grid_x, unsigned int grid_y, unsigned int grid_z,
                                unsigned int block_x, unsigned int block_y,
                                const void* voxels, unsigned int label_mask, unsigned int mixed_flag,
                                int ni, int nj, int nk, int plane_first, int plane_stop,
                                const double* poses, int width, int height,
                                const float* mu_log2, const float* bin_weights, int n_bins,
                                float* line_integrals, float* primary, int slab_flags)
{
    const long long blocks = (long long)grid_x * grid_y * grid_z;
#pragma omp parallel for schedule(dynamic, 1)
    for (long long block = 0; block < blocks; ++block) {
        gridDim = dim3{grid_x, grid_y, grid_z};
        blockDim = dim3{block_x, block_y, 1};
        blockIdx = dim3{(unsigned int)(block % grid_x), (unsigned int)((block / grid_x) % grid_y),
                        (unsigned int)(block / ((long long)grid_x * grid_y))};
        for (unsigned int ty = 0; ty < block_y; ++ty) {
            for (unsigned int tx = 0; tx < block_x; ++tx) {
                threadIdx = dim3{tx, ty, 0};
                drr_joseph(voxels, label_mask, mixed_flag, ni, nj, nk, plane_first, plane_stop, poses, width,
                           height, mu_log2, bin_weights, n_bins, line_integrals, primary, slab_flags);
            }
        }
    }
}

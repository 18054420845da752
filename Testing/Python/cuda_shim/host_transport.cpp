// Test-only: the host launcher for the scatter Monte Carlo's transport.cu (see cuda_host_shim.h). Runs the
// grid's blocks in parallel (OpenMP when available) and each block's threads one after another; the
// kernel's tallies are atomic, so any order gives the same sums.
#include "cuda_host_shim.h"

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

#include "transport.cu"

extern "C" void shim_mc_transport(unsigned int grid_x, unsigned int block_x, const double* P, const long long* I,
                                  const float* density, const unsigned char* labels, const float* fractions,
                                  const double* mu_fine, const double* src_energy, const double* src_cdf,
                                  const double* mu_src, const double* block_max, const double* y_grid,
                                  const double* f2, const double* f2_cumulative, const double* x_grid,
                                  const double* s_fn, const double* s_inf, const double* det_mu_t_fine,
                                  const double* det_mu_t_src, const double* norm_compton,
                                  const double* norm_rayleigh, unsigned long long* tallies, unsigned long long* book)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (long long block = 0; block < (long long)grid_x; ++block) {
        gridDim = dim3{grid_x, 1, 1};
        blockDim = dim3{block_x, 1, 1};
        blockIdx = dim3{(unsigned int)block, 0, 0};
        for (unsigned int tx = 0; tx < block_x; ++tx) {
            threadIdx = dim3{tx, 0, 0};
            mc_transport(P, I, density, labels, fractions, mu_fine, src_energy, src_cdf, mu_src, block_max, y_grid,
                         f2, f2_cumulative, x_grid, s_fn, s_inf, det_mu_t_fine, det_mu_t_src, norm_compton,
                         norm_rayleigh, tallies, book);
        }
    }
}

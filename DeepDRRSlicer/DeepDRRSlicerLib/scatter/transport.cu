// Monte Carlo photon transport on the GPU: a line-by-line port of kernel_cpu.transport (numba), which
// documents the physics, the geometry, the Philox streams and the fixed-point tallies. One thread per
// photon (grid-stride loop); photon n of a run with a seed draws the same random numbers as on the CPU,
// and the integer tallies are order independent, so a run gives the same images for any launch shape.
// Compiled on the host with the same flags as numba's LLVM (no FMA contraction), this source reproduces
// the CPU kernel bit for bit (the test suite does that); on a GPU, log/exp/sin/cos differ from the host's
// libm in the last bits, which changes a rare history, so GPU and CPU agree statistically.
//
// No #include and no warp-level features: it compiles with NVRTC (CuPy), nvcc (pycuda) and, through the
// test-only header that maps the CUDA built-ins, with a host C++ compiler.
//
// Arguments: P (doubles, MC_P_*), I (64-bit integers, MC_I_*), the voxel arrays and the tables (layouts
// as in kernel_cpu.transport: row-major, float64 unless noted), the tallies (N_TALLIES, H_t, W_t) and the
// bookkeeping (N_BOOK), both unsigned 64-bit, added to atomically.

#define MC_MAX_ROWS 17            // materials + world air
#define MC_N_TALLIES 6
#define MC_N_BOOK 17

// P
#define MC_P_RAS_TO_IJK 0         // 12: 3 x 4
#define MC_P_SOURCE 12
#define MC_P_DET_ORIGIN 15
#define MC_P_DET_U 18
#define MC_P_DET_V 21
#define MC_P_DET_NORMAL 24
#define MC_P_BEAM_WINDOW 27       // 4
#define MC_P_GRID_AXIS 31
#define MC_P_WORLD_CENTER 34
#define MC_P_E0 37
#define MC_P_INV_DE 38
#define MC_P_AIR_DENSITY 39
#define MC_P_HC 40
#define MC_P_REST_KEV 41
#define MC_P_COS_MAX 42
#define MC_P_GRID_RATIO 43
#define MC_P_GRID_OPEN 44
#define MC_P_WORLD_RADIUS 45
#define MC_P_COUNT 46

// I
#define MC_I_FIRST_PHOTON 0
#define MC_I_N_PHOTONS 1
#define MC_I_SEED_LO 2
#define MC_I_SEED_HI 3
#define MC_I_USE_FRACTIONS 4
#define MC_I_NI 5
#define MC_I_NJ 6
#define MC_I_NK 7
#define MC_I_N_MATERIALS 8
#define MC_I_N_E 9
#define MC_I_N_BINS 10
#define MC_I_BSIZE 11
#define MC_I_NBI 12
#define MC_I_NBJ 13
#define MC_I_NBK 14
#define MC_I_N_X 15
#define MC_I_WIDTH 16
#define MC_I_HEIGHT 17
#define MC_I_GRID_ON 18
#define MC_I_TALLY_BIN 19
#define MC_I_FORCED 20
#define MC_I_TALLY_H 21
#define MC_I_TALLY_W 22
#define MC_I_COUNT 23

// tally channels and bookkeeping counters: kernel_cpu's T_* and B_*
#define T_PRIMARY 0
#define T_PRIMARY_SQ 1
#define T_SCATTER 2
#define T_SCATTER_SQ 3
#define T_SCATTER_E2 4
#define T_SCATTER_COUNT 5
#define B_EMITTED 0
#define B_EMITTED_E 1
#define B_ABSORBED 2
#define B_ABSORBED_E 3
#define B_COMPTON_E 4
#define B_PRIMARY_DET 5
#define B_PRIMARY_DET_E 6
#define B_SCATTER_DET 7
#define B_SCATTER_DET_E 8
#define B_ESCAPED 9
#define B_ESCAPED_E 10
#define B_COMPTON 11
#define B_RAYLEIGH 12
#define B_PHOTO 13
#define B_VIRTUAL 14
#define B_SINGLE_COMPTON_DET 15
#define B_SINGLE_RAYLEIGH_DET 16

#define MC_ENERGY_QUANTUM 9.5367431640625e-07      // 2^-20 keV
#define MC_ENERGY2_QUANTUM 0.000244140625          // 2^-12 keV^2
#define MC_WEIGHT_QUANTUM 9.313225746154785e-10    // 2^-30
#define MC_TO_UNIT 2.3283064365386963e-10          // 2^-32
#define MC_ENERGY_CUT_KEV 1.0
#define MC_EPS_MM 1e-6
#define MC_PI 3.141592653589793

typedef unsigned long long mc_u64;
typedef long long mc_i64;

struct McRandom {
    unsigned int photon_lo, photon_hi, key0, key1;
    mc_u64 draw;
    int used;
    double buffer[4];
};

__device__ __forceinline__ void mc_philox(unsigned int* c, unsigned int k0, unsigned int k1)
{
    for (int round = 0; round < 10; ++round) {
        const mc_u64 p0 = (mc_u64)0xD2511F53u * c[0];
        const mc_u64 p1 = (mc_u64)0xCD9E8D57u * c[2];
        const unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        const unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        const unsigned int n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

__device__ __forceinline__ double mc_uniform(McRandom* r)
{
    if (r->used >= 4) {
        unsigned int c[4] = {(unsigned int)r->draw, (unsigned int)(r->draw >> 32), r->photon_lo, r->photon_hi};
        mc_philox(c, r->key0, r->key1);
        for (int i = 0; i < 4; ++i)
            r->buffer[i] = ((double)c[i] + 0.5) * MC_TO_UNIT;
        r->draw += 1;
        r->used = 0;
    }
    return r->buffer[r->used++];
}

__device__ __forceinline__ mc_i64 mc_round(double value)
{
    return llrint(value);   // to nearest, ties to even: Python's round
}

// linear interpolation of row[0 .. n_e) on the uniform energy grid
__device__ __forceinline__ double mc_interp(const double* row, double energy, double e0, double inv_de, int n_e)
{
    const double x = (energy - e0) * inv_de;
    const int j = (int)floor(x);
    if (j < 0)
        return row[0];
    if (j >= n_e - 1)
        return row[n_e - 1];
    const double t = x - j;
    return row[j] * (1.0 - t) + row[j + 1] * t;
}

__device__ __forceinline__ void mc_box_span(double px, double py, double pz, double dx, double dy, double dz,
                                            const double* a, int n0, int n1, int n2, double* t_in_out,
                                            double* t_out_out)
{
    double t_in = -1e300, t_out = 1e300;
    for (int axis = 0; axis < 3; ++axis) {
        const double s = a[axis * 4 + 0] * px + a[axis * 4 + 1] * py + a[axis * 4 + 2] * pz + a[axis * 4 + 3];
        const double e = a[axis * 4 + 0] * dx + a[axis * 4 + 1] * dy + a[axis * 4 + 2] * dz;
        const int n = axis == 0 ? n0 : (axis == 1 ? n1 : n2);
        const double low = -0.5, high = n - 0.5;
        if (fabs(e) < 1e-15) {
            if (s < low || s > high) {
                *t_in_out = 1e300;
                *t_out_out = -1e300;
                return;
            }
        } else {
            double ta = (low - s) / e, tb = (high - s) / e;
            if (ta > tb) {
                const double swap = ta;
                ta = tb;
                tb = swap;
            }
            if (ta > t_in)
                t_in = ta;
            if (tb < t_out)
                t_out = tb;
        }
    }
    *t_in_out = t_in;
    *t_out_out = t_out;
}

__device__ __forceinline__ double mc_mu_material(const double* mu_fine, const double* mu_src, int m, double energy,
                                                 bool exact, int src_bin, double e0, double inv_de, int n_e,
                                                 int n_bins)
{
    if (exact)
        return mu_src[(m * 3 + 0) * n_bins + src_bin] + mu_src[(m * 3 + 1) * n_bins + src_bin]
               + mu_src[(m * 3 + 2) * n_bins + src_bin];
    return mc_interp(mu_fine + (m * 3 + 0) * n_e, energy, e0, inv_de, n_e)
           + mc_interp(mu_fine + (m * 3 + 1) * n_e, energy, e0, inv_de, n_e)
           + mc_interp(mu_fine + (m * 3 + 2) * n_e, energy, e0, inv_de, n_e);
}

__device__ __forceinline__ double mc_incoherent_function(const double* s_row, double x, const double* x_grid, int n)
{
    const double x_max = x_grid[n - 1];
    const int j = (int)(sqrt(x / x_max) * (n - 1));
    if (j >= n - 1)
        return s_row[n - 1];
    const double t = (x - x_grid[j]) / (x_grid[j + 1] - x_grid[j]);
    return s_row[j] * (1.0 - t) + s_row[j + 1] * t;
}

__device__ __forceinline__ double mc_form_factor_squared(const double* f2_row, double x, const double* x_grid, int n)
{
    const double x_max = x_grid[n - 1];
    const int j = (int)(sqrt(x / x_max) * (n - 1));
    if (j >= n - 1)
        return f2_row[n - 1];
    const double y0 = x_grid[j] * x_grid[j];
    const double y1 = x_grid[j + 1] * x_grid[j + 1];
    const double t = (x * x - y0) / (y1 - y0);
    return f2_row[j] * (1.0 - t) + f2_row[j + 1] * t;
}

struct McWalk {
    int blk[3];
    int stepb[3];
    double tnext[3];
    double dtb[3];
};

__device__ __forceinline__ void mc_dda_start(double px, double py, double pz, double dx, double dy, double dz,
                                             const double* a, int bsize, int nbi, int nbj, int nbk, McWalk* w)
{
    for (int axis = 0; axis < 3; ++axis) {
        const double q = a[axis * 4 + 0] * px + a[axis * 4 + 1] * py + a[axis * 4 + 2] * pz + a[axis * 4 + 3];
        const double e = a[axis * 4 + 0] * dx + a[axis * 4 + 1] * dy + a[axis * 4 + 2] * dz;
        const int n_a = axis == 0 ? nbi : (axis == 1 ? nbj : nbk);
        int b = (int)floor((q + 0.5) / bsize);
        b = b < 0 ? 0 : b;
        b = b > n_a - 1 ? n_a - 1 : b;
        w->blk[axis] = b;
        if (e > 1e-15) {
            w->tnext[axis] = ((b + 1) * bsize - 0.5 - q) / e;
            w->dtb[axis] = bsize / e;
            w->stepb[axis] = 1;
        } else if (e < -1e-15) {
            w->tnext[axis] = (b * bsize - 0.5 - q) / e;
            w->dtb[axis] = -bsize / e;
            w->stepb[axis] = -1;
        } else {
            w->tnext[axis] = 1e300;
            w->dtb[axis] = 1e300;
            w->stepb[axis] = 0;
        }
    }
}

__device__ __forceinline__ bool mc_dda_advance(McWalk* w, int nbi, int nbj, int nbk)
{
    int a = 0;
    if (w->tnext[1] < w->tnext[a])
        a = 1;
    if (w->tnext[2] < w->tnext[a])
        a = 2;
    w->blk[a] += w->stepb[a];
    w->tnext[a] += w->dtb[a];
    const int n_a = a == 0 ? nbi : (a == 1 ? nbj : nbk);
    return 0 <= w->blk[a] && w->blk[a] < n_a;
}

__device__ __forceinline__ double mc_block_sigma(const double* block_max, const McWalk* w, int nbi, int nbj,
                                                 const double* mu_now, int n_materials, bool use_fractions)
{
    const mc_i64 block = ((mc_i64)w->blk[2] * nbj + w->blk[1]) * nbi + w->blk[0];
    const double* row = block_max + block * (n_materials + 1);
    double s = 0.0, largest_mu = 0.0;
    for (int m = 0; m < n_materials; ++m) {
        const double v = row[m] * mu_now[m];
        if (use_fractions) {
            s += v;
            if (row[m] > 0.0 && mu_now[m] > largest_mu)
                largest_mu = mu_now[m];
        } else if (v > s) {
            s = v;
        }
    }
    if (use_fractions) {
        const double whole = row[n_materials] * largest_mu;
        s = whole < s ? whole : s;
    }
    return s * 0.1 * (1.0 + 1e-6);
}

__device__ __forceinline__ void mc_fill_mu(double* mu_now, int rows, const double* mu_fine, const double* mu_src,
                                           double energy, bool exact, int src_bin, double e0, double inv_de, int n_e,
                                           int n_bins)
{
    for (int m = 0; m < rows; ++m)
        mu_now[m] = mc_mu_material(mu_fine, mu_src, m, energy, exact, src_bin, e0, inv_de, n_e, n_bins);
}

struct McVolume {
    const double* a;          // RAS -> ijk, 3 x 4
    int ni, nj, nk;
    const float* density;
    const unsigned char* labels;
    const float* fractions;   // (M, voxels)
    bool use_fractions;
    int n_materials;
    mc_i64 voxels;
    const double* block_max;
    int bsize, nbi, nbj, nbk;
};

// (mu in 1/mm) of the voxel containing q, kept inside the current block; rho and voxel through pointers;
// mixture[m] = fraction_m * mu_m/rho for soft fractions
__device__ __forceinline__ double mc_voxel_mu_in_block(double qx, double qy, double qz, const McVolume* v,
                                                       const McWalk* w, double* mixture, const double* mu_now,
                                                       double* rho_out, mc_i64* voxel_out)
{
    const double* a = v->a;
    const double fi = a[0] * qx + a[1] * qy + a[2] * qz + a[3];
    const double fj = a[4] * qx + a[5] * qy + a[6] * qz + a[7];
    const double fk = a[8] * qx + a[9] * qy + a[10] * qz + a[11];
    const int bs = v->bsize;
    int lo, hi, ii, jj, kk;
    ii = (int)floor(fi + 0.5);
    lo = w->blk[0] * bs;
    hi = (w->blk[0] * bs + bs < v->ni ? w->blk[0] * bs + bs : v->ni) - 1;
    ii = ii < lo ? lo : ii;
    ii = ii > hi ? hi : ii;
    jj = (int)floor(fj + 0.5);
    lo = w->blk[1] * bs;
    hi = (w->blk[1] * bs + bs < v->nj ? w->blk[1] * bs + bs : v->nj) - 1;
    jj = jj < lo ? lo : jj;
    jj = jj > hi ? hi : jj;
    kk = (int)floor(fk + 0.5);
    lo = w->blk[2] * bs;
    hi = (w->blk[2] * bs + bs < v->nk ? w->blk[2] * bs + bs : v->nk) - 1;
    kk = kk < lo ? lo : kk;
    kk = kk > hi ? hi : kk;
    const mc_i64 voxel = ((mc_i64)kk * v->nj + jj) * v->ni + ii;
    const double rho = (double)v->density[voxel];
    double mu = 0.0;
    if (v->use_fractions) {
        for (int m = 0; m < v->n_materials; ++m) {
            mixture[m] = (double)v->fractions[(mc_i64)m * v->voxels + voxel] * mu_now[m];
            mu += mixture[m];
        }
    } else {
        mu = mu_now[v->labels[voxel]];
    }
    *rho_out = rho;
    *voxel_out = voxel;
    return mu * rho * 0.1;
}

// ratio-tracking transmissions at two energies along p + t d, t in [0, dist] (kernel_cpu._transmission)
__device__ void mc_transmission(McRandom* rng, double px, double py, double pz, double dx, double dy, double dz,
                                double dist, const double* mu_a, const double* mu_b, const McVolume* v,
                                double* mixture, McWalk* w, double air_density, double* out_a, double* out_b)
{
    const int n_materials = v->n_materials;
    double t_in, t_out;
    mc_box_span(px, py, pz, dx, dy, dz, v->a, v->ni, v->nj, v->nk, &t_in, &t_out);
    if (t_in < 0.0)
        t_in = 0.0;
    if (t_out > dist)
        t_out = dist;
    double inside = 0.0, value = 1.0, value2 = 1.0;
    if (t_out > t_in) {
        inside = t_out - t_in;
        const double sx = px + t_in * dx, sy = py + t_in * dy, sz = pz + t_in * dz;
        const double end = t_out - t_in;
        mc_dda_start(sx, sy, sz, dx, dy, dz, v->a, v->bsize, v->nbi, v->nbj, v->nbk, w);
        double s1 = mc_block_sigma(v->block_max, w, v->nbi, v->nbj, mu_a, n_materials, v->use_fractions);
        double s2 = mc_block_sigma(v->block_max, w, v->nbi, v->nbj, mu_b, n_materials, v->use_fractions);
        double sigma = s1 > s2 ? s1 : s2;
        double t = 0.0;
        while (true) {
            double t_end = w->tnext[0] < w->tnext[1] ? w->tnext[0] : w->tnext[1];
            const double t_far = w->tnext[2] < end ? w->tnext[2] : end;
            t_end = t_end < t_far ? t_end : t_far;
            const double t_try = sigma > 0.0 ? t - log(mc_uniform(rng)) / sigma : 1e300;
            if (t_try < t_end) {
                t = t_try;
                const double qx = sx + t * dx, qy = sy + t * dy, qz = sz + t * dz;
                double rho;
                mc_i64 voxel;
                const double mu1 = mc_voxel_mu_in_block(qx, qy, qz, v, w, mixture, mu_a, &rho, &voxel);
                const double mu2 = mc_voxel_mu_in_block(qx, qy, qz, v, w, mixture, mu_b, &rho, &voxel);
                value *= 1.0 - mu1 / sigma;
                value2 *= 1.0 - mu2 / sigma;
                if (value <= 1e-12 && value2 <= 1e-12) {
                    *out_a = 0.0;
                    *out_b = 0.0;
                    return;
                }
                continue;
            }
            t = t_end;
            if (t >= end || !mc_dda_advance(w, v->nbi, v->nbj, v->nbk))
                break;
            s1 = mc_block_sigma(v->block_max, w, v->nbi, v->nbj, mu_a, n_materials, v->use_fractions);
            s2 = mc_block_sigma(v->block_max, w, v->nbi, v->nbj, mu_b, n_materials, v->use_fractions);
            sigma = s1 > s2 ? s1 : s2;
        }
    }
    const double length = (dist - inside) * air_density * 0.1;
    *out_a = value * exp(-mu_a[n_materials] * length);
    *out_b = value2 * exp(-mu_b[n_materials] * length);
}

__device__ __forceinline__ void mc_rotate(double* dx, double* dy, double* dz, double cos_t, double phi)
{
    const double sin_t = sqrt(0.0 > 1.0 - cos_t * cos_t ? 0.0 : 1.0 - cos_t * cos_t);
    const double cp = cos(phi), sp = sin(phi);
    double nx, ny, nz;
    if (fabs(*dz) > 0.99999) {
        const double sign = *dz > 0 ? 1.0 : -1.0;
        nx = sin_t * cp;
        ny = sin_t * sp;
        nz = cos_t * sign;
    } else {
        const double tmp = sqrt(1.0 - *dz * *dz);
        nx = cos_t * *dx + sin_t * (*dx * *dz * cp - *dy * sp) / tmp;
        ny = cos_t * *dy + sin_t * (*dy * *dz * cp + *dx * sp) / tmp;
        nz = cos_t * *dz - sin_t * cp * tmp;
    }
    const double norm = sqrt(nx * nx + ny * ny + nz * nz);
    *dx = nx / norm;
    *dy = ny / norm;
    *dz = nz / norm;
}

__device__ double mc_sample_rayleigh(McRandom* rng, double energy, const double* y_grid, const double* f2_row,
                                     const double* cumulative, int n, double hc)
{
    const double k = energy / hc;
    const double y_max = k * k;
    int lo = 0, hi = n - 1;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (y_grid[mid] <= y_max)
            lo = mid;
        else
            hi = mid;
    }
    double dy = y_max - y_grid[lo];
    double width = y_grid[lo + 1] - y_grid[lo];
    const double slope = (f2_row[lo + 1] - f2_row[lo]) / width;
    const double total = cumulative[lo] + f2_row[lo] * dy + 0.5 * slope * dy * dy;
    while (true) {
        const double target = mc_uniform(rng) * total;
        lo = 0;
        hi = n - 1;
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            if (cumulative[mid] <= target)
                lo = mid;
            else
                hi = mid;
        }
        const double rest = target - cumulative[lo];
        width = y_grid[lo + 1] - y_grid[lo];
        const double a = f2_row[lo];
        const double b = (f2_row[lo + 1] - a) / width;
        const double disc = a * a + 2.0 * b * rest;
        const double t = 2.0 * rest / (a + sqrt(0.0 > disc ? 0.0 : disc));
        const double y = y_grid[lo] + t;
        double cos_t = 1.0 - 2.0 * y / y_max;
        if (cos_t < -1.0)
            cos_t = -1.0;
        if (mc_uniform(rng) * 2.0 <= 1.0 + cos_t * cos_t)
            return cos_t;
    }
}

__device__ double mc_sample_compton(McRandom* rng, double energy, const double* x_grid, const double* s_row,
                                    int n, double s_inf, double hc, double rest_kev)
{
    const double alpha = energy / rest_kev;
    const double k = energy / hc;
    while (true) {
        const double cos_t = 2.0 * mc_uniform(rng) - 1.0;
        const double p = 1.0 / (1.0 + alpha * (1.0 - cos_t));
        const double kn = 0.5 * p * p * (p + 1.0 / p - 1.0 + cos_t * cos_t);
        const double s = mc_incoherent_function(s_row, k * sqrt(0.5 * (1.0 - cos_t)), x_grid, n);
        if (mc_uniform(rng) <= kn * s / s_inf)
            return cos_t;
    }
}

__device__ __forceinline__ void mc_add(mc_u64* address, mc_i64 value)
{
    atomicAdd(address, (mc_u64)value);
}

__device__ __forceinline__ void mc_score(mc_u64* tallies, bool scatter, double row, double col, double energy,
                                         double weight, int tally_bin, int tally_h, int tally_w)
{
    int tr = (int)floor(row + 0.5) / tally_bin;
    int tc = (int)floor(col + 0.5) / tally_bin;
    if (tr >= tally_h)
        tr = tally_h - 1;
    if (tc >= tally_w)
        tc = tally_w - 1;
    const mc_i64 plane = (mc_i64)tally_h * tally_w;
    const mc_i64 pixel = (mc_i64)tr * tally_w + tc;
    const double w = energy * weight;
    if (scatter) {
        mc_add(tallies + T_SCATTER * plane + pixel, mc_round(w / MC_ENERGY_QUANTUM));
        mc_add(tallies + T_SCATTER_SQ * plane + pixel, mc_round(w * w / MC_ENERGY2_QUANTUM));
        mc_add(tallies + T_SCATTER_E2 * plane + pixel, mc_round(energy * w / MC_ENERGY2_QUANTUM));
        mc_add(tallies + T_SCATTER_COUNT * plane + pixel, mc_round(weight / MC_WEIGHT_QUANTUM));
    } else {
        mc_add(tallies + T_PRIMARY * plane + pixel, mc_round(w / MC_ENERGY_QUANTUM));
        mc_add(tallies + T_PRIMARY_SQ * plane + pixel, mc_round(w * w / MC_ENERGY2_QUANTUM));
    }
}

__device__ __forceinline__ double mc_grid_transmission(const double* P, bool grid_on, double hx, double hy, double hz,
                                                       double dx, double dy, double dz, double cos_inc)
{
    if (!grid_on)
        return 1.0;
    const double* source = P + MC_P_SOURCE;
    const double* axis = P + MC_P_GRID_AXIS;
    const double* normal = P + MC_P_DET_NORMAL;
    const double fx = hx - source[0], fy = hy - source[1], fz = hz - source[2];
    const double f_across = fx * axis[0] + fy * axis[1] + fz * axis[2];
    const double f_normal = -(fx * normal[0] + fy * normal[1] + fz * normal[2]);
    const double d_across = dx * axis[0] + dy * axis[1] + dz * axis[2];
    const double deviation = d_across / cos_inc - f_across / f_normal;
    const double open = 1.0 - P[MC_P_GRID_RATIO] * fabs(deviation);
    return P[MC_P_GRID_OPEN] * (0.0 > open ? 0.0 : open);
}

extern "C" __global__ void mc_transport(const double* P, const mc_i64* I, const float* density,
                                        const unsigned char* labels, const float* fractions, const double* mu_fine,
                                        const double* src_energy, const double* src_cdf, const double* mu_src,
                                        const double* block_max, const double* y_grid, const double* f2,
                                        const double* f2_cumulative, const double* x_grid, const double* s_fn,
                                        const double* s_inf, const double* det_mu_t_fine,
                                        const double* det_mu_t_src, const double* norm_compton,
                                        const double* norm_rayleigh, mc_u64* tallies, mc_u64* book)
{
    McVolume v;
    v.a = P + MC_P_RAS_TO_IJK;
    v.ni = (int)I[MC_I_NI];
    v.nj = (int)I[MC_I_NJ];
    v.nk = (int)I[MC_I_NK];
    v.density = density;
    v.labels = labels;
    v.fractions = fractions;
    v.use_fractions = I[MC_I_USE_FRACTIONS] != 0;
    v.n_materials = (int)I[MC_I_N_MATERIALS];
    v.voxels = (mc_i64)v.ni * v.nj * v.nk;
    v.block_max = block_max;
    v.bsize = (int)I[MC_I_BSIZE];
    v.nbi = (int)I[MC_I_NBI];
    v.nbj = (int)I[MC_I_NBJ];
    v.nbk = (int)I[MC_I_NBK];
    const int n_materials = v.n_materials;
    const int rows = n_materials + 1;
    const int n_e = (int)I[MC_I_N_E];
    const int n_bins = (int)I[MC_I_N_BINS];
    const int n_x = (int)I[MC_I_N_X];
    const int width = (int)I[MC_I_WIDTH];
    const int height = (int)I[MC_I_HEIGHT];
    const bool grid_on = I[MC_I_GRID_ON] != 0;
    const int tally_bin = (int)I[MC_I_TALLY_BIN];
    const bool forced = I[MC_I_FORCED] != 0;
    const int tally_h = (int)I[MC_I_TALLY_H];
    const int tally_w = (int)I[MC_I_TALLY_W];
    const double e0 = P[MC_P_E0], inv_de = P[MC_P_INV_DE], air_density = P[MC_P_AIR_DENSITY];
    const double hc = P[MC_P_HC], rest_kev = P[MC_P_REST_KEV], cos_max = P[MC_P_COS_MAX];
    const double world_radius = P[MC_P_WORLD_RADIUS];
    const double* source = P + MC_P_SOURCE;
    const double* det_origin = P + MC_P_DET_ORIGIN;
    const double* det_u = P + MC_P_DET_U;
    const double* det_v = P + MC_P_DET_V;
    const double* det_normal = P + MC_P_DET_NORMAL;
    const double* beam_window = P + MC_P_BEAM_WINDOW;
    const double* world_center = P + MC_P_WORLD_CENTER;
    const double u_len2 = det_u[0] * det_u[0] + det_u[1] * det_u[1] + det_u[2] * det_u[2];
    const double v_len2 = det_v[0] * det_v[0] + det_v[1] * det_v[1] + det_v[2] * det_v[2];
    const double cx = det_u[1] * det_v[2] - det_u[2] * det_v[1];
    const double cy = det_u[2] * det_v[0] - det_u[0] * det_v[2];
    const double cz = det_u[0] * det_v[1] - det_u[1] * det_v[0];
    const double detector_area = sqrt(cx * cx + cy * cy + cz * cz) * width * height;

    double mixture[MC_MAX_ROWS];
    double mu_now[MC_MAX_ROWS];
    double mu_scat[MC_MAX_ROWS];
    mc_i64 counts[MC_N_BOOK];
    for (int i = 0; i < MC_N_BOOK; ++i)
        counts[i] = 0;
    McWalk w;
    McRandom rng;
    rng.key0 = (unsigned int)I[MC_I_SEED_LO];
    rng.key1 = (unsigned int)I[MC_I_SEED_HI];

    const mc_i64 first = I[MC_I_FIRST_PHOTON];
    const mc_i64 n_photons = I[MC_I_N_PHOTONS];
    const mc_i64 stride = (mc_i64)gridDim.x * blockDim.x;
    for (mc_i64 index = (mc_i64)blockIdx.x * blockDim.x + threadIdx.x; index < n_photons; index += stride) {
        const mc_u64 photon = (mc_u64)(first + index);
        rng.photon_lo = (unsigned int)photon;
        rng.photon_hi = (unsigned int)(photon >> 32);
        rng.draw = 0;
        rng.used = 4;
        // --- source
        const double r = mc_uniform(&rng);
        int lo = 0, hi = n_bins - 1;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (src_cdf[mid] < r)
                lo = mid + 1;
            else
                hi = mid;
        }
        const int src_bin = lo;
        double energy = src_energy[src_bin];
        double tx, ty, tz, dist;
        while (true) {
            const double cu = beam_window[0] + mc_uniform(&rng) * (beam_window[1] - beam_window[0]);
            const double rv = beam_window[2] + mc_uniform(&rng) * (beam_window[3] - beam_window[2]);
            tx = det_origin[0] + cu * det_u[0] + rv * det_v[0] - source[0];
            ty = det_origin[1] + cu * det_u[1] + rv * det_v[1] - source[1];
            tz = det_origin[2] + cu * det_u[2] + rv * det_v[2] - source[2];
            dist = sqrt(tx * tx + ty * ty + tz * tz);
            const double c = fabs(tx * det_normal[0] + ty * det_normal[1] + tz * det_normal[2]) / dist;
            const double ratio = c / cos_max;
            if (mc_uniform(&rng) <= ratio * ratio * ratio)
                break;
        }
        double dx = tx / dist, dy = ty / dist, dz = tz / dist;
        double px = source[0], py = source[1], pz = source[2];
        counts[B_EMITTED] += 1;
        counts[B_EMITTED_E] += mc_round(energy / MC_ENERGY_QUANTUM);
        int n_compton = 0, n_rayleigh = 0;
        bool exact = true;
        mc_fill_mu(mu_now, rows, mu_fine, mu_src, energy, exact, src_bin, e0, inv_de, n_e, n_bins);
        while (true) {
            double t_in, t_out;
            mc_box_span(px, py, pz, dx, dy, dz, v.a, v.ni, v.nj, v.nk, &t_in, &t_out);
            const bool inside = t_in <= 0.0 && 0.0 < t_out;
            bool interact = false;
            int material = n_materials;
            if (inside) {
                mc_dda_start(px, py, pz, dx, dy, dz, v.a, v.bsize, v.nbi, v.nbj, v.nbk, &w);
                double sigma = mc_block_sigma(block_max, &w, v.nbi, v.nbj, mu_now, n_materials, v.use_fractions);
                double t = 0.0;
                while (true) {
                    double t_end = w.tnext[0] < w.tnext[1] ? w.tnext[0] : w.tnext[1];
                    const double t_far = w.tnext[2] < t_out ? w.tnext[2] : t_out;
                    t_end = t_end < t_far ? t_end : t_far;
                    const double t_try = sigma > 0.0 ? t - log(mc_uniform(&rng)) / sigma : 1e300;
                    if (t_try < t_end) {
                        t = t_try;
                        const double qx = px + t * dx, qy = py + t * dy, qz = pz + t * dz;
                        double rho;
                        mc_i64 voxel;
                        const double mu_voxel = mc_voxel_mu_in_block(qx, qy, qz, &v, &w, mixture, mu_now, &rho,
                                                                     &voxel);
                        if (mc_uniform(&rng) * sigma < mu_voxel) {
                            interact = true;
                            px = qx;
                            py = qy;
                            pz = qz;
                            if (v.use_fractions) {
                                double pick = mc_uniform(&rng) * mu_voxel / (rho * 0.1);
                                material = n_materials - 1;
                                for (int m = 0; m < n_materials; ++m) {
                                    pick -= mixture[m];
                                    if (pick <= 0.0) {
                                        material = m;
                                        break;
                                    }
                                }
                            } else {
                                material = labels[voxel];
                            }
                            break;
                        }
                        counts[B_VIRTUAL] += 1;
                        continue;
                    }
                    t = t_end;
                    if (t >= t_out || !mc_dda_advance(&w, v.nbi, v.nbj, v.nbk))
                        break;
                    sigma = mc_block_sigma(block_max, &w, v.nbi, v.nbj, mu_now, n_materials, v.use_fractions);
                }
                if (!interact) {
                    px += (t_out + MC_EPS_MM) * dx;
                    py += (t_out + MC_EPS_MM) * dy;
                    pz += (t_out + MC_EPS_MM) * dz;
                    continue;
                }
            } else {
                // --- world air: box entry, detector plane, world boundary, or an interaction
                const double t_box = (t_in > 0.0 && t_in < t_out) ? t_in : 1e300;
                double t_det = 1e300;
                const double toward = dx * det_normal[0] + dy * det_normal[1] + dz * det_normal[2];
                const double height_above = (px - det_origin[0]) * det_normal[0]
                                            + (py - det_origin[1]) * det_normal[1]
                                            + (pz - det_origin[2]) * det_normal[2];
                if (toward < 0.0 && height_above > 0.0)
                    t_det = -height_above / toward;
                const double ox = px - world_center[0], oy = py - world_center[1], oz = pz - world_center[2];
                const double b = ox * dx + oy * dy + oz * dz;
                const double cc = ox * ox + oy * oy + oz * oz - world_radius * world_radius;
                const double disc = b * b - cc;
                const double t_world = -b + sqrt(0.0 > disc ? 0.0 : disc);
                const double mu_air = mu_now[n_materials] * air_density * 0.1;
                const double step = -log(mc_uniform(&rng)) / mu_air;
                const double t_near = t_det < t_world ? t_det : t_world;
                const double t_next = t_box < t_near ? t_box : t_near;
                if (step < t_next) {
                    px += step * dx;
                    py += step * dy;
                    pz += step * dz;
                    interact = true;
                    material = n_materials;
                } else if (t_det <= t_box && t_det <= t_world) {
                    const double hx = px + t_det * dx, hy = py + t_det * dy, hz = pz + t_det * dz;
                    const double col = ((hx - det_origin[0]) * det_u[0] + (hy - det_origin[1]) * det_u[1]
                                        + (hz - det_origin[2]) * det_u[2]) / u_len2;
                    const double row = ((hx - det_origin[0]) * det_v[0] + (hy - det_origin[1]) * det_v[1]
                                        + (hz - det_origin[2]) * det_v[2]) / v_len2;
                    if (-0.5 <= col && col < width - 0.5 && -0.5 <= row && row < height - 0.5) {
                        const double cos_inc = -toward;
                        const double mu_t = exact ? det_mu_t_src[src_bin]
                                                  : mc_interp(det_mu_t_fine, energy, e0, inv_de, n_e);
                        const double eta = -expm1(-mu_t / cos_inc);
                        const double weight = eta * mc_grid_transmission(P, grid_on, hx, hy, hz, dx, dy, dz, cos_inc);
                        const mc_i64 e_det = mc_round(energy / MC_ENERGY_QUANTUM);
                        if (n_compton + n_rayleigh == 0) {
                            mc_score(tallies, false, row, col, energy, weight, tally_bin, tally_h, tally_w);
                            counts[B_PRIMARY_DET] += 1;
                            counts[B_PRIMARY_DET_E] += e_det;
                        } else {
                            if (!forced)
                                mc_score(tallies, true, row, col, energy, weight, tally_bin, tally_h, tally_w);
                            counts[B_SCATTER_DET] += 1;
                            counts[B_SCATTER_DET_E] += e_det;
                            if (n_compton + n_rayleigh == 1) {
                                if (n_compton == 1)
                                    counts[B_SINGLE_COMPTON_DET] += 1;
                                else
                                    counts[B_SINGLE_RAYLEIGH_DET] += 1;
                            }
                        }
                        break;
                    }
                    px += (t_det + MC_EPS_MM) * dx;
                    py += (t_det + MC_EPS_MM) * dy;
                    pz += (t_det + MC_EPS_MM) * dz;
                    continue;
                } else if (t_box <= t_world) {
                    px += (t_box + MC_EPS_MM) * dx;
                    py += (t_box + MC_EPS_MM) * dy;
                    pz += (t_box + MC_EPS_MM) * dz;
                    continue;
                } else {
                    counts[B_ESCAPED] += 1;
                    counts[B_ESCAPED_E] += mc_round(energy / MC_ENERGY_QUANTUM);
                    break;
                }
            }
            // --- a real interaction with material `material` (n_materials = world air)
            double photo, coherent, incoherent;
            if (exact) {
                photo = mu_src[(material * 3 + 0) * n_bins + src_bin];
                coherent = mu_src[(material * 3 + 1) * n_bins + src_bin];
                incoherent = mu_src[(material * 3 + 2) * n_bins + src_bin];
            } else {
                photo = mc_interp(mu_fine + (material * 3 + 0) * n_e, energy, e0, inv_de, n_e);
                coherent = mc_interp(mu_fine + (material * 3 + 1) * n_e, energy, e0, inv_de, n_e);
                incoherent = mc_interp(mu_fine + (material * 3 + 2) * n_e, energy, e0, inv_de, n_e);
            }
            const double mu_total = photo + coherent + incoherent;
            if (forced) {
                // --- next-event estimate toward a uniformly drawn detector point
                const double cu = -0.5 + mc_uniform(&rng) * width;
                const double rv = -0.5 + mc_uniform(&rng) * height;
                double wx = det_origin[0] + cu * det_u[0] + rv * det_v[0] - px;
                double wy = det_origin[1] + cu * det_u[1] + rv * det_v[1] - py;
                double wz = det_origin[2] + cu * det_u[2] + rv * det_v[2] - pz;
                const double wdist = sqrt(wx * wx + wy * wy + wz * wz);
                wx /= wdist;
                wy /= wdist;
                wz /= wdist;
                const double cos_inc = -(wx * det_normal[0] + wy * det_normal[1] + wz * det_normal[2]);
                if (cos_inc > 0.0) {
                    const double solid = detector_area * cos_inc / (wdist * wdist);
                    const double cos_t = dx * wx + dy * wy + dz * wz;
                    const double k = energy / hc;
                    const double half = 0.5 * (1.0 - cos_t);
                    const double x = k * sqrt(0.0 > half ? 0.0 : half);
                    const double hx = px + wdist * wx, hy = py + wdist * wy, hz = pz + wdist * wz;
                    const double grid_t = mc_grid_transmission(P, grid_on, hx, hy, hz, wx, wy, wz, cos_inc);
                    if (grid_t > 0.0) {
                        const double density_r = 0.5 * (1.0 + cos_t * cos_t)
                                                 * mc_form_factor_squared(f2 + material * n_x, x, x_grid, n_x)
                                                 / mc_interp(norm_rayleigh + material * n_e, energy, e0, inv_de, n_e);
                        const double alpha = energy / rest_kev;
                        const double p = 1.0 / (1.0 + alpha * (1.0 - cos_t));
                        const double scattered = energy * p;
                        mc_fill_mu(mu_scat, rows, mu_fine, mu_src, scattered, false, src_bin, e0, inv_de, n_e, n_bins);
                        double trans, trans_c;
                        mc_transmission(&rng, px, py, pz, wx, wy, wz, wdist, mu_now, mu_scat, &v, mixture, &w,
                                        air_density, &trans, &trans_c);
                        double mu_t = exact ? det_mu_t_src[src_bin] : mc_interp(det_mu_t_fine, energy, e0, inv_de, n_e);
                        double eta = -expm1(-mu_t / cos_inc);
                        double weight = (coherent / mu_total) * density_r * solid * trans * eta * grid_t;
                        if (weight > 0.0)
                            mc_score(tallies, true, rv, cu, energy, weight, tally_bin, tally_h, tally_w);
                        if (scattered >= MC_ENERGY_CUT_KEV) {
                            const double kn = 0.5 * p * p * (p + 1.0 / p - 1.0 + cos_t * cos_t);
                            const double density_c = kn * mc_incoherent_function(s_fn + material * n_x, x, x_grid, n_x)
                                                     / mc_interp(norm_compton + material * n_e, energy, e0, inv_de,
                                                                 n_e);
                            mu_t = mc_interp(det_mu_t_fine, scattered, e0, inv_de, n_e);
                            eta = -expm1(-mu_t / cos_inc);
                            weight = (incoherent / mu_total) * density_c * solid * trans_c * eta * grid_t;
                            if (weight > 0.0)
                                mc_score(tallies, true, rv, cu, scattered, weight, tally_bin, tally_h, tally_w);
                        }
                    }
                }
            }
            const double pick = mc_uniform(&rng) * mu_total;
            double cos_t;
            if (pick < photo) {
                counts[B_PHOTO] += 1;
                counts[B_ABSORBED] += 1;
                counts[B_ABSORBED_E] += mc_round(energy / MC_ENERGY_QUANTUM);
                break;
            }
            if (pick < photo + coherent) {
                cos_t = mc_sample_rayleigh(&rng, energy, y_grid, f2 + material * n_x, f2_cumulative + material * n_x,
                                           n_x, hc);
                n_rayleigh += 1;
                counts[B_RAYLEIGH] += 1;
            } else {
                cos_t = mc_sample_compton(&rng, energy, x_grid, s_fn + material * n_x, n_x, s_inf[material], hc,
                                          rest_kev);
                const double new_energy = energy / (1.0 + energy / rest_kev * (1.0 - cos_t));
                const mc_i64 before = mc_round(energy / MC_ENERGY_QUANTUM);
                const mc_i64 after = mc_round(new_energy / MC_ENERGY_QUANTUM);
                counts[B_COMPTON_E] += before - after;
                energy = new_energy;
                exact = false;
                mc_fill_mu(mu_now, rows, mu_fine, mu_src, energy, exact, src_bin, e0, inv_de, n_e, n_bins);
                n_compton += 1;
                counts[B_COMPTON] += 1;
            }
            mc_rotate(&dx, &dy, &dz, cos_t, 2.0 * MC_PI * mc_uniform(&rng));
            if (energy < MC_ENERGY_CUT_KEV) {
                counts[B_ABSORBED] += 1;
                counts[B_ABSORBED_E] += mc_round(energy / MC_ENERGY_QUANTUM);
                break;
            }
        }
    }
    for (int i = 0; i < MC_N_BOOK; ++i)
        if (counts[i] != 0)
            mc_add(book + i, counts[i]);
}

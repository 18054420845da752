// The CUDA projector: Joseph's method, per-material line integrals (g/cm2) and the polychromatic
// primary I/I0 in one pass. One thread per detector pixel, one grid z-layer per pose.
//
// It computes what the CPU default computes (projector_cpu.joseph_rows documents the exact rule:
// ray clipped to the voxel box and to tau in [0, 1]; one sample per cell of the dominant axis, at the
// midpoint of the ray's part inside the cell, weighted by that part's length; trilinear interpolant of
// each material's density with clamp-to-edge; line integral = sum * ray length in cm). It reads the same
// padded voxel layouts (projector_voxels): packed labels (density and label in one uint32) or
// per-material density channels.
//
// Differences from the CPU kernel, all at float32 rounding level: samples and sums are float32 (the
// per-ray setup is float64; in-slice positions are 64-bit fixed point, see DRR_FIXED_BITS); samples are
// summed in the order that visits the slab axis k upwards (see below), not end cells first.
//
// Slabs. A volume larger than free device memory is projected in slabs of padded k-planes. Every
// sample is owned by the slab holding the lower k-plane of its interpolation (``plane_first <= k0 <
// plane_stop``); a slab stores planes plane_first..plane_stop, so each owned sample finds all its
// voxels. The ray, its cells and its samples are always those of the whole volume, and each ray visits
// its samples in k-ascending order, so slabs processed in ascending order add the very same float32
// terms in the very same order as one slab: split and unsplit results are equal bit for bit. Between
// slabs the running sums live in ``line_integrals``; the last slab scales them and forms the primary.
//
// Compile-time parameters (the launchers define them; each combination is its own module):
//   DRR_MATERIALS  number of materials, 1..16 (the accumulators stay in registers)
//   DRR_LABELS     1: packed-labels layout (uint32 per padded voxel); 0: float32 channels [voxel][M]
// No #include and no warp-level features: the source compiles with NVRTC (CuPy), nvcc (pycuda, PTX
// check) and, through a test-only header that maps the CUDA built-ins, with a host C++ compiler.

#ifndef DRR_MATERIALS
#define DRR_MATERIALS 3
#endif
#ifndef DRR_LABELS
#define DRR_LABELS 1
#endif

// One pose: source, centre of pixel (0, 0), column step u, row step v, each in continuous voxel-index
// coordinates (unpadded) and then in RAS mm (for the ray length).
#define DRR_POSE_DOUBLES 24
#define DRR_FIRST_SLAB 1
#define DRR_LAST_SLAB 2

struct DrrSlab {
#if DRR_LABELS
    const unsigned int* packed;
#else
    const float* channels;
#endif
    unsigned int label_mask;
    unsigned int mixed_flag;
    int ni, nj, nk;          // unpadded size of the whole volume
    int pi, pij;             // padded strides (j, k)
    int plane_first;         // padded k-planes owned: [plane_first, plane_stop); stored from plane_first
    int plane_stop;
};

__device__ __forceinline__ void drr_add(float* acc, unsigned int material, float value)
{
#pragma unroll
    for (int m = 0; m < DRR_MATERIALS; ++m) {
        acc[m] += (m == (int)material) ? value : 0.0f;
    }
}

#if DRR_LABELS
// acc[label] += weight * value of one padded voxel (slab-relative index).
__device__ __forceinline__ void drr_add_voxel(const DrrSlab& s, float* acc, int index, float weight)
{
    unsigned int bits = __ldg(s.packed + index);
    drr_add(acc, bits & s.label_mask, weight * __uint_as_float(bits));
}
#else
__device__ __forceinline__ void drr_add_voxel(const DrrSlab& s, float* acc, int index, float weight)
{
    const float* voxel = s.channels + (long long)index * DRR_MATERIALS;
#pragma unroll
    for (int m = 0; m < DRR_MATERIALS; ++m) {
        acc[m] += weight * __ldg(voxel + m);
    }
}
#endif

// Lower padded index and fraction along one axis of an unpadded coordinate, clamped to the padding
// (projector_cpu._corner). In float64: the end cells' positions come straight from the ray setup.
__device__ __forceinline__ int drr_corner(double x, int n, float* fraction)
{
    double p = x + 1.0;
    double lower = floor(p);
    if (lower < 0.0) {
        *fraction = 0.0f;
        return 0;
    }
    if (lower > (double)n) {
        *fraction = 1.0f;
        return n;
    }
    *fraction = (float)(p - lower);
    return (int)lower;
}

// A trilinear sample at unpadded index point (x, y, z), weight ``weight``, if this slab owns it.
__device__ void drr_trilinear(const DrrSlab& s, float* acc, double x, double y, double z, float weight)
{
    float fx, fy, fz;
    int i0 = drr_corner(x, s.ni, &fx);
    int j0 = drr_corner(y, s.nj, &fy);
    int k0 = drr_corner(z, s.nk, &fz);
    if (k0 < s.plane_first || k0 >= s.plane_stop) {
        return;
    }
    int base = (k0 - s.plane_first) * s.pij + j0 * s.pi + i0;
    for (int dk = 0; dk < 2; ++dk) {
        float wz = (dk ? fz : 1.0f - fz) * weight;
        for (int dj = 0; dj < 2; ++dj) {
            float wyz = (dj ? fy : 1.0f - fy) * wz;
            int row = base + dk * s.pij + dj * s.pi;
            drr_add_voxel(s, acc, row, (1.0f - fx) * wyz);
            drr_add_voxel(s, acc, row + 1, fx * wyz);
        }
    }
}

// In-slice positions of the interior cells are 64-bit fixed point with DRR_FIXED_BITS fraction bits:
// stepping them is exact integer addition, so a sample's position does not depend on where the
// stepping started (slabs) and stays within 2^-40 voxel of the float64 ray for any volume size.
#define DRR_FIXED_BITS 40
#define DRR_FIXED_ONE 1099511627776.0   // 2^40

__device__ __forceinline__ long long drr_to_fixed(double x)
{
    return (long long)floor(x * DRR_FIXED_ONE + 0.5);
}

// Integer part (floor) and fraction (rounded to 24 bits, in [0, 1]) of a fixed-point coordinate.
__device__ __forceinline__ int drr_split_fixed(long long x, float* fraction)
{
    unsigned int fraction24 = (unsigned int)((((x & ((1LL << DRR_FIXED_BITS) - 1)) >> (DRR_FIXED_BITS - 25)) + 1) >> 1);
    *fraction = (float)fraction24 * 5.9604644775390625e-8f;   // 2^-24
    return (int)(x >> DRR_FIXED_BITS);
}

// A bilinear sample in a plane of the dominant axis: the four voxels at ``index`` (slab-relative,
// lower corner), +stride_b, +stride_c, +both, with fractions fb, fc; weight ``weight``.
__device__ __forceinline__ void drr_bilinear(const DrrSlab& s, float* acc, int index, int stride_b,
                                             int stride_c, float fb, float fc, float weight)
{
#if DRR_LABELS
    unsigned int b00 = __ldg(s.packed + index);
    unsigned int b01 = __ldg(s.packed + index + stride_b);
    unsigned int b10 = __ldg(s.packed + index + stride_c);
    unsigned int b11 = __ldg(s.packed + index + stride_b + stride_c);
    float v00 = __uint_as_float(b00), v01 = __uint_as_float(b01);
    float v10 = __uint_as_float(b10), v11 = __uint_as_float(b11);
    if ((b00 & s.mixed_flag) == 0u) {
        // the 2x2x2 block at the lower corner holds one material: one bilinear density
        float d0 = v00 + fb * (v01 - v00);
        float d1 = v10 + fb * (v11 - v10);
        drr_add(acc, b00 & s.label_mask, (d0 + fc * (d1 - d0)) * weight);
    } else {
        float gb = 1.0f - fb, gc = 1.0f - fc;
        drr_add(acc, b00 & s.label_mask, gb * gc * v00 * weight);
        drr_add(acc, b01 & s.label_mask, fb * gc * v01 * weight);
        drr_add(acc, b10 & s.label_mask, gb * fc * v10 * weight);
        drr_add(acc, b11 & s.label_mask, fb * fc * v11 * weight);
    }
#else
    float gb = 1.0f - fb, gc = 1.0f - fc;
    drr_add_voxel(s, acc, index, gb * gc * weight);
    drr_add_voxel(s, acc, index + stride_b, fb * gc * weight);
    drr_add_voxel(s, acc, index + stride_c, gb * fc * weight);
    drr_add_voxel(s, acc, index + stride_b + stride_c, fb * fc * weight);
#endif
}

__device__ __forceinline__ double drr_clamp_double(double x, double low, double high)
{
    return x < low ? low : (x > high ? high : x);
}

extern "C" __global__ void drr_joseph(
    const void* voxels,                 // the slab: uint32 packed labels or float32 channels
    unsigned int label_mask, unsigned int mixed_flag,
    int ni, int nj, int nk,             // the whole volume, unpadded
    int plane_first, int plane_stop,    // padded k-planes this slab owns (it stores first..stop)
    const double* __restrict__ poses,   // [pose][DRR_POSE_DOUBLES]
    int width, int height,
    const float* __restrict__ mu_log2,  // [material][bin]: mu/rho (cm2/g) * log2(e)
    const float* __restrict__ bin_weights, int n_bins,   // detector weights; n_bins 0: no primary
    float* __restrict__ line_integrals, // [pose][material][row][column]; running sums between slabs
    float* __restrict__ primary,        // [pose][row][column]
    int slab_flags)
{
    const int column = blockIdx.x * blockDim.x + threadIdx.x;
    const int row = blockIdx.y * blockDim.y + threadIdx.y;
    const int pose = blockIdx.z;
    if (column >= width || row >= height) {
        return;
    }
    DrrSlab s;
#if DRR_LABELS
    s.packed = (const unsigned int*)voxels;
#else
    s.channels = (const float*)voxels;
#endif
    s.label_mask = label_mask;
    s.mixed_flag = mixed_flag;
    s.ni = ni;
    s.nj = nj;
    s.nk = nk;
    s.pi = ni + 2;
    s.pij = (ni + 2) * (nj + 2);
    s.plane_first = plane_first;
    s.plane_stop = plane_stop;

    const long long pixels = (long long)width * height;
    const long long pixel = (long long)row * width + column;
    float* out = line_integrals + (long long)pose * DRR_MATERIALS * pixels + pixel;
    float acc[DRR_MATERIALS];
#pragma unroll
    for (int m = 0; m < DRR_MATERIALS; ++m) {
        acc[m] = (slab_flags & DRR_FIRST_SLAB) ? 0.0f : out[m * pixels];
    }

    const double* p = poses + (long long)pose * DRR_POSE_DOUBLES;
    const double s0 = p[0], s1 = p[1], s2 = p[2];
    const double e0 = p[3] + column * p[6] + row * p[9] - s0;
    const double e1 = p[4] + column * p[7] + row * p[10] - s1;
    const double e2 = p[5] + column * p[8] + row * p[11] - s2;

    // 1. entry and exit tau through the box [-0.5, n - 0.5]^3, clipped to [0, 1]
    double t_in = 0.0, t_out = 1.0;
    {
        const double sv[3] = {s0, s1, s2};
        const double ev[3] = {e0, e1, e2};
        const int nv[3] = {ni, nj, nk};
        for (int axis = 0; axis < 3; ++axis) {
            double low = -0.5, high = nv[axis] - 0.5;
            if (fabs(ev[axis]) < 1e-12) {
                if (sv[axis] < low || sv[axis] > high) {
                    t_in = 1.0;
                    t_out = 0.0;
                }
            } else {
                double ta = (low - sv[axis]) / ev[axis];
                double tb = (high - sv[axis]) / ev[axis];
                if (ta > tb) {
                    double swap = ta;
                    ta = tb;
                    tb = swap;
                }
                if (ta > t_in) t_in = ta;
                if (tb < t_out) t_out = tb;
            }
        }
    }

    if (t_in < t_out) {
        // 2. dominant axis a (ties to the lower axis); b, c the in-slice axes (c is k unless a is k)
        const double a0 = fabs(e0), a1 = fabs(e1), a2 = fabs(e2);
        int axis;
        double sa, ea, sb, eb, sc, ec;
        int na, stride_a, stride_b, stride_c, nb, nc;
        if (a0 >= a1 && a0 >= a2) {
            axis = 0; sa = s0; ea = e0; na = ni; stride_a = 1;
            sb = s1; eb = e1; stride_b = s.pi; nb = nj;
            sc = s2; ec = e2; stride_c = s.pij; nc = nk;
        } else if (a1 >= a2) {
            axis = 1; sa = s1; ea = e1; na = nj; stride_a = s.pi;
            sb = s0; eb = e0; stride_b = 1; nb = ni;
            sc = s2; ec = e2; stride_c = s.pij; nc = nk;
        } else {
            axis = 2; sa = s2; ea = e2; na = nk; stride_a = s.pij;
            sb = s0; eb = e0; stride_b = 1; nb = ni;
            sc = s1; ec = e1; stride_c = s.pi; nc = nj;
        }
        const double inv_ea = 1.0 / ea;
        const double cell_tau = fabs(inv_ea);
        const double p_in = sa + t_in * ea, p_out = sa + t_out * ea;
        const double lo = p_in < p_out ? p_in : p_out;
        const double hi = p_in < p_out ? p_out : p_in;
        const int n_lo = (int)drr_clamp_double(floor(lo + 0.5), 0.0, na - 1.0);
        const int n_hi = (int)drr_clamp_double(floor(hi + 0.5), 0.0, na - 1.0);

        // interior cells n_lo < n < n_hi: the plane a = n, bilinear in (b, c) at padded (xb, xc) =
        // x1 + (n - n1) * dx, with n1 the first interior cell, in fixed point
        const int n1 = n_lo + 1;
        const double db = eb * inv_ea, dc = ec * inv_ea;
        const double xc1_double = sc + (n1 - sa) * dc + 1.0;
        const long long xb1 = drr_to_fixed(sb + (n1 - sa) * db + 1.0);
        const long long xc1 = drr_to_fixed(xc1_double);
        const long long step_b = drr_to_fixed(db), step_c = drr_to_fixed(dc);
        const float weight = (float)cell_tau;
        // visit k upwards: along n unless a is not k and the ray's k falls as n grows
        const bool ascending = axis == 2 || dc >= 0.0;
        // interior cells that may be owned by this slab (each is checked exactly below)
        int first = n1, last = n_hi - 1;
        if (axis == 2) {
            if (plane_first - 1 > first) first = plane_first - 1;
            if (plane_stop - 2 < last) last = plane_stop - 2;
        } else if (dc != 0.0) {
            double at_first = n1 + (plane_first - xc1_double) / dc;
            double at_stop = n1 + (plane_stop - xc1_double) / dc;
            double low = (at_first < at_stop ? at_first : at_stop) - 2.0;
            double high = (at_first < at_stop ? at_stop : at_first) + 2.0;
            low = drr_clamp_double(low, n1 - 1.0, n_hi + 1.0);
            high = drr_clamp_double(high, n1 - 1.0, n_hi + 1.0);
            if ((int)low > first) first = (int)low;
            if ((int)high < last) last = (int)high;
        }

        for (int pass = 0; pass < 3; ++pass) {
            // pass 0 and 2: the end cells, first and last in visiting order; pass 1: the interior
            if (pass != 1) {
                int n = ((pass == 0) == ascending) ? n_lo : n_hi;
                if (pass == 2 && n_hi == n_lo) break;
                double c0 = n - 0.5 > lo ? n - 0.5 : lo;
                double c1 = n + 0.5 < hi ? n + 0.5 : hi;
                if (c1 > c0) {
                    double t = (0.5 * (c0 + c1) - sa) * inv_ea;
                    drr_trilinear(s, acc, s0 + t * e0, s1 + t * e1, s2 + t * e2, (float)((c1 - c0) * cell_tau));
                }
                continue;
            }
            if (last < first) {
                continue;
            }
            const int n_start = ascending ? first : last;
            const int direction = ascending ? 1 : -1;
            long long xb = xb1 + (long long)(n_start - n1) * step_b;
            long long xc = xc1 + (long long)(n_start - n1) * step_c;
            const long long dxb = ascending ? step_b : -step_b;
            const long long dxc = ascending ? step_c : -step_c;
            for (int n = n_start, left = last - first; left >= 0; --left, n += direction, xb += dxb, xc += dxc) {
                float fb, fc;
                int ib = drr_split_fixed(xb, &fb);
                int ic = drr_split_fixed(xc, &fc);
                ib = ib < 0 ? 0 : (ib > nb ? nb : ib);
                ic = ic < 0 ? 0 : (ic > nc ? nc : ic);
                const int plane = axis == 2 ? n + 1 : ic;
                if (plane < plane_first || plane >= plane_stop) {
                    continue;
                }
                // slab-relative: the k-plane first (whole volumes may exceed 2^31 voxels, slabs do not)
                const int in_plane = ib * stride_b + (axis == 2 ? ic * stride_c : (n + 1) * stride_a);
                const int index = (plane - plane_first) * s.pij + in_plane;
                drr_bilinear(s, acc, index, stride_b, stride_c, fb, fc, weight);
            }
        }
    }

    if (!(slab_flags & DRR_LAST_SLAB)) {
#pragma unroll
        for (int m = 0; m < DRR_MATERIALS; ++m) {
            out[m * pixels] = acc[m];
        }
        return;
    }
    // the ray's length in mm (source to pixel centre) turns tau into cm
    const double d0 = p[15] + column * p[18] + row * p[21] - p[12];
    const double d1 = p[16] + column * p[19] + row * p[22] - p[13];
    const double d2 = p[17] + column * p[20] + row * p[23] - p[14];
    const float scale = (float)(sqrt(d0 * d0 + d1 * d1 + d2 * d2) * 0.1);
#pragma unroll
    for (int m = 0; m < DRR_MATERIALS; ++m) {
        acc[m] *= scale;
        out[m * pixels] = acc[m];
    }
    if (n_bins > 0) {
        // I/I0 = sum_b w_b 2^-(sum_m mu_log2[m][b] L_m)
        float total = 0.0f;
        for (int b = 0; b < n_bins; ++b) {
            float exponent = 0.0f;
#pragma unroll
            for (int m = 0; m < DRR_MATERIALS; ++m) {
                exponent = fmaf(__ldg(mu_log2 + m * n_bins + b), acc[m], exponent);
            }
            total = fmaf(__ldg(bin_weights + b), exp2f(-exponent), total);
        }
        primary[(long long)pose * pixels + pixel] = total;
    }
}

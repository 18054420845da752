"""CPU ray casting kernels (numba, one thread per detector row).

All kernels work in continuous voxel-index space, where voxel (i, j, k) is the
unit cube centred on integer (i, j, k), so any oblique or anisotropic IJK->RAS
matrix is handled by mapping the ray, not the volume. A ray runs from the
source to the pixel centre; ``tau`` in [0, 1] parametrises it (so material
behind the detector is never integrated) and ``length_mm`` converts tau to
millimetres. The volume is the box [-0.5, n - 0.5] on each axis.

They read the voxel layouts of ``projector_voxels`` (padded by one edge
voxel: padded index = index + 1), which hold per-material densities
rho_m = density * fraction_m; hard labels are one-hot fractions. Each kernel
accumulates per-material line integrals (g/cm2) and, given a spectrum, the
polychromatic primary in the same pass.

``joseph_rows`` (the default; see its docstring for the exact rule): the
trilinear interpolant of rho_m integrated along the ray with one sample per
voxel slice of the ray's dominant axis. ``siddon_rows``: exact path lengths
through each voxel of the nearest-voxel (piecewise-constant) model
(Amanatides & Woo 1987 / Jacobs 1998). ``trilinear_rows``: the same
interpolant as Joseph's, sampled at a fixed step in mm from the entry point
(DeepDRR's projector). benchmarks/bench_projector_accuracy.py and
bench_cpu_projector.py measure all three.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import int64, njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

MM_TO_CM = 0.1
#: Joseph's interior loop over density channels hints the cache this many slices ahead: consecutive
#: slices lie a whole row or plane apart in memory, which the hardware prefetcher does not follow.
PREFETCH_SLICES = 12


@intrinsic
def _as_float32(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits`` (C: __uint_as_float / memcpy)."""
    signature = types.float32(types.uint32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the cache to fetch the line holding element ``index`` of a contiguous array. A hint only:
    it never faults (an index outside the array is harmless) and never changes a result."""
    signature = types.void(array, index)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]), "llvm.prefetch.p0i8")
        # read (0), keep in all cache levels (3), data not instructions (1)
        builder.call(function, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return signature, codegen


def _vector_bilinear(width: int):
    """An intrinsic acc[0:width] += sum_q w_q * row q of ``channels`` (float32 [voxels, M], widened to
    float64): each corner's materials in one ``width``-wide load instead of M scalar loads. Lanes past M
    read the next voxel (or the layout's slack) and land in acc[M:width], which callers ignore; acc
    must hold ``width`` values."""

    @intrinsic
    def bilinear(typingctx, channels, i00, i01, i10, i11, w00, w01, w10, w11, acc):
        signature = types.void(channels, i00, i01, i10, i11, w00, w01, w10, w11, acc)

        def codegen(context, builder, sig, args):
            channels_array = context.make_array(sig.args[0])(context, builder, args[0])
            data = channels_array.data
            row_floats = builder.udiv(builder.extract_value(channels_array.strides, 0), ir.Constant(ir.IntType(64), 4))
            floats = ir.VectorType(ir.FloatType(), width)
            doubles = ir.VectorType(ir.DoubleType(), width)
            lanes = ir.VectorType(ir.IntType(32), width)
            total = None
            for corner in range(4):
                address = builder.gep(data, [builder.mul(args[1 + corner], row_floats)])
                loaded = builder.load(builder.bitcast(address, floats.as_pointer()), align=4)
                scalar = builder.insert_element(ir.Constant(doubles, ir.Undefined), args[5 + corner],
                                                ir.Constant(ir.IntType(32), 0))
                weight = builder.shuffle_vector(scalar, ir.Constant(doubles, ir.Undefined),
                                                ir.Constant(lanes, [0] * width))
                term = builder.fmul(builder.fpext(loaded, doubles), weight, flags=("fast",))
                total = term if total is None else builder.fadd(total, term, flags=("fast",))
            out = builder.bitcast(context.make_array(sig.args[9])(context, builder, args[9]).data, doubles.as_pointer())
            builder.store(builder.fadd(builder.load(out, align=8), total, flags=("fast",)), out, align=8)
            return context.get_dummy_value()

        return signature, codegen

    return bilinear


_bilinear_4 = _vector_bilinear(4)
_bilinear_8 = _vector_bilinear(8)


def vector_width(layout) -> int:
    """The vector width the ``fractions`` kernels may use for ``layout`` (0: scalar loads): 4 or 8 when the
    materials fit, the channels are C-contiguous and the buffer has the slack a wide load at the last voxel needs."""
    if layout.kind != "fractions" or not layout.channels.flags.c_contiguous:
        return 0
    for width in (4, 8):
        if layout.n_materials <= width and layout.channel_slack >= width - layout.n_materials:
            return width
    return 0


@njit(inline="always")
def _clip_to_box(s0, s1, s2, e0, e1, e2, n0, n1, n2):
    """Entry and exit tau of the ray s + tau*e through [-0.5, n-0.5]^3, clipped to [0, 1]."""
    t_in = 0.0
    t_out = 1.0
    for axis in range(3):
        if axis == 0:
            s, e, n = s0, e0, n0
        elif axis == 1:
            s, e, n = s1, e1, n1
        else:
            s, e, n = s2, e2, n2
        low = -0.5
        high = n - 0.5
        if abs(e) < 1e-12:
            if s < low or s > high:
                return 1.0, 0.0
        else:
            ta = (low - s) / e
            tb = (high - s) / e
            if ta > tb:
                ta, tb = tb, ta
            if ta > t_in:
                t_in = ta
            if tb < t_out:
                t_out = tb
    return t_in, t_out


# exp(-x) as 2^-y, y = x log2(e): 2^-(integer part) from a table, 2^-(fraction) from a
# degree-9 Taylor polynomial (relative error < 1e-8). Unlike libm's exp this vectorises
# over the energy bins, which makes the polychromatic sum ~6x faster. Terms below
# 2^-63 are negligible and clamped.
LOG2E = 1.4426950408889634
POW2_NEGATIVE = 2.0 ** -np.arange(64.0)


@njit(inline="always", fastmath=True)
def _primary_from_integrals(acc, mu_log2, weights, exponent):
    """sum_b weights[b] exp(-sum_m mu[m, b] acc[m]); mu_log2 = mu * log2(e); exponent is scratch."""
    n_bins = weights.shape[0]
    for b in range(n_bins):
        exponent[b] = 0.0
    for m in range(acc.shape[0]):
        a = acc[m]
        for b in range(n_bins):
            exponent[b] += mu_log2[m, b] * a
    total = 0.0
    for b in range(n_bins):
        y = min(exponent[b], 63.5)
        n = int(y)
        t = (y - n) * 0.6931471805599453
        two_to_minus_fraction = 1.0 - t * (1.0 - t * (0.5 - t * (1.0 / 6 - t * (1.0 / 24 - t * (
            1.0 / 120 - t * (1.0 / 720 - t * (1.0 / 5040 - t * (1.0 / 40320 - t / 362880))))))))
        total += weights[b] * two_to_minus_fraction * POW2_NEGATIVE[n]
    return total


@njit(inline="always")
def _ray(r, c, source_ijk, origin_ijk, u_ijk, v_ijk, source_ras, origin_ras, u_ras, v_ras, ni, nj, nk):
    """Ray to the centre of pixel (row r, column c): index-space direction (tau in [0, 1] spans
    source -> pixel), its length in mm, and the tau interval inside the volume."""
    e0 = origin_ijk[0] + c * u_ijk[0] + r * v_ijk[0] - source_ijk[0]
    e1 = origin_ijk[1] + c * u_ijk[1] + r * v_ijk[1] - source_ijk[1]
    e2 = origin_ijk[2] + c * u_ijk[2] + r * v_ijk[2] - source_ijk[2]
    d0 = origin_ras[0] + c * u_ras[0] + r * v_ras[0] - source_ras[0]
    d1 = origin_ras[1] + c * u_ras[1] + r * v_ras[1] - source_ras[1]
    d2 = origin_ras[2] + c * u_ras[2] + r * v_ras[2] - source_ras[2]
    t_in, t_out = _clip_to_box(source_ijk[0], source_ijk[1], source_ijk[2], e0, e1, e2, ni, nj, nk)
    return e0, e1, e2, math.sqrt(d0 * d0 + d1 * d1 + d2 * d2), t_in, t_out


@njit(inline="always")
def _finish_pixel(acc, length_mm, r, c, line_integrals, want_primary, mu_log2, weights, exponent, primary):
    scale = length_mm * MM_TO_CM
    for m in range(acc.shape[0]):
        acc[m] *= scale
        line_integrals[m, r, c] = acc[m]
    if want_primary:
        primary[r, c] = _primary_from_integrals(acc, mu_log2, weights, exponent)


# ---------------------------------------------------------------------------------------------
# Trilinear sample (any point in the box), for Joseph's end cells and the fixed-step march.


@njit(inline="always")
def _corner(x, n):
    """Lower padded index and fraction along one axis of an unpadded coordinate, clamped to the padding."""
    p = x + 1.0
    i = int64(math.floor(p))
    if i < 0:
        return int64(0), 0.0
    if i > n:
        return int64(n), 1.0
    return i, p - i


@njit(inline="always")
def _add_trilinear(packed, values, channels, use_labels, label_mask, x, y, z, ni, nj, nk, weight, acc):
    """acc[m] += weight * (trilinear interpolant of rho_m at unpadded index point (x, y, z))."""
    pi = ni + 2
    pij = pi * (nj + 2)
    i0, fx = _corner(x, ni)
    j0, fy = _corner(y, nj)
    k0, fz = _corner(z, nk)
    for dk in range(2):
        wz = (fz if dk else 1.0 - fz) * weight
        for dj in range(2):
            wyz = (fy if dj else 1.0 - fy) * wz
            row = uint64((k0 + dk) * pij + (j0 + dj) * pi + i0)
            for di in range(2):
                w = (fx if di else 1.0 - fx) * wyz
                index = row + uint64(di)
                if use_labels:
                    acc[packed[index] & label_mask] += w * values[index]
                else:
                    for m in range(acc.shape[0]):
                        acc[m] += w * channels[index, m]


# ---------------------------------------------------------------------------------------------
# Joseph: the interior (full) cells of the dominant axis, bilinear in the slice.


@njit(fastmath=True, nogil=True)
def _joseph_interior_labels(packed, values, label_mask, mixed_flag, acc, n_first, n_last, sa, inv_ea,
                            sb, eb, sc, ec, stride_a, stride_b, stride_c, weight):
    """Slices n_first <= n < n_last, packed labels. Where the 2x2x2 block at the sample's lower corner
    holds one material (mixed flag clear) its bilinear density goes to a register run of that
    material; elsewhere each corner goes to its own material."""
    db = eb * inv_ea
    dc = ec * inv_ea
    xb = sb + (n_first - sa) * db + 1.0   # padded in-slice coordinates (>= 0.5: truncation = floor)
    xc = sc + (n_first - sa) * dc + 1.0
    base = uint64((n_first + 1) * stride_a)
    run = 0.0
    run_material = 0
    for _ in range(n_first, n_last):
        ib = int64(xb)
        ic = int64(xc)
        fb = xb - ib
        fc = xc - ic
        i00 = base + uint64(ib * stride_b + ic * stride_c)
        i01 = i00 + uint64(stride_b)
        i10 = i00 + uint64(stride_c)
        i11 = i10 + uint64(stride_b)
        bits00 = packed[i00]
        if bits00 & mixed_flag == 0:
            d0 = values[i00] + fb * (values[i01] - values[i00])
            d1 = values[i10] + fb * (values[i11] - values[i10])
            sample = d0 + fc * (d1 - d0)
            material = bits00 & label_mask
            if material == run_material:
                run += sample
            else:
                acc[run_material] += run * weight
                run_material = material
                run = sample
        else:
            gb = 1.0 - fb
            gc = 1.0 - fc
            acc[bits00 & label_mask] += gb * gc * values[i00] * weight
            acc[packed[i01] & label_mask] += fb * gc * values[i01] * weight
            acc[packed[i10] & label_mask] += gb * fc * values[i10] * weight
            acc[packed[i11] & label_mask] += fb * fc * values[i11] * weight
        xb += db
        xc += dc
        base += uint64(stride_a)
    acc[run_material] += run * weight


@njit(fastmath=True, nogil=True)
def _joseph_interior_fractions(channels, acc, n_first, n_last, sa, inv_ea, sb, eb, sc, ec,
                               stride_a, stride_b, stride_c, weight, load_width):
    """Slices n_first <= n < n_last, per-material density channels; ``load_width``: vector_width (0, 4, 8)."""
    db = eb * inv_ea
    dc = ec * inv_ea
    xb = sb + (n_first - sa) * db + 1.0
    xc = sc + (n_first - sa) * dc + 1.0
    base = uint64((n_first + 1) * stride_a)
    n_materials = channels.shape[1]
    row = uint64(n_materials)
    last_float = row - uint64(1)
    for _ in range(n_first, n_last):
        ib = int64(xb)
        ic = int64(xc)
        fb = xb - ib
        fc = xc - ic
        i00 = base + uint64(ib * stride_b + ic * stride_c)
        i01 = i00 + uint64(stride_b)
        i10 = i00 + uint64(stride_c)
        i11 = i10 + uint64(stride_b)
        ahead = base + uint64(PREFETCH_SLICES * stride_a + int64(xb + PREFETCH_SLICES * db) * stride_b
                              + int64(xc + PREFETCH_SLICES * dc) * stride_c)
        _prefetch(channels, ahead * row)
        _prefetch(channels, (ahead + uint64(stride_b)) * row + last_float)
        _prefetch(channels, (ahead + uint64(stride_c)) * row)
        _prefetch(channels, (ahead + uint64(stride_c + stride_b)) * row + last_float)
        w00 = (1.0 - fb) * (1.0 - fc) * weight
        w01 = fb * (1.0 - fc) * weight
        w10 = (1.0 - fb) * fc * weight
        w11 = fb * fc * weight
        if load_width == 8:
            _bilinear_8(channels, i00, i01, i10, i11, w00, w01, w10, w11, acc)
        elif load_width == 4:
            _bilinear_4(channels, i00, i01, i10, i11, w00, w01, w10, w11, acc)
        else:
            for m in range(n_materials):
                acc[m] += (w00 * channels[i00, m] + w01 * channels[i01, m] + w10 * channels[i10, m]
                           + w11 * channels[i11, m])
        xb += db
        xc += dc
        base += uint64(stride_a)


@njit(parallel=True, fastmath=True, nogil=True, cache=True)
def joseph_rows(packed, channels, use_labels, label_mask, mixed_flag, nk, nj, ni,
                source_ijk, origin_ijk, u_ijk, v_ijk, source_ras, origin_ras, u_ras, v_ras,
                row_start, row_stop, mu_log2, weights, line_integrals, primary, load_width):
    """Joseph's method (Joseph 1982, IEEE TMI 1:192), as the midpoint rule over dominant-axis cells.

    The exact rule, which every backend implements:

    1. Ray: index-space point ``s + tau e`` (``s`` the source, ``e`` source -> pixel centre),
       clipped to the box [-0.5, n - 0.5] on each axis and to tau in [0, 1]: [t_in, t_out].
       No samples when t_in >= t_out (or either is NaN).
    2. Dominant axis ``a``: the largest |e_a| (ties go to the lower axis, i before j before k).
       ``lo``, ``hi``: the smaller and larger of s_a + t_in e_a and s_a + t_out e_a.
    3. Cells: for every integer n from clamp(floor(lo + 0.5)) to clamp(floor(hi + 0.5)) (clamped
       to 0..n_a-1), the ray's part inside the slab [n - 0.5, n + 0.5] along ``a``:
       [p0, p1] = [max(lo, n - 0.5), min(hi, n + 0.5)]; cells with p1 <= p0 are skipped.
    4. One sample per cell, at the part's midpoint along ``a``: the point where
       coordinate a = (p0 + p1) / 2, i.e. tau = ((p0 + p1) / 2 - s_a) / e_a. Its weight is the
       part's length in tau, (p1 - p0) / |e_a|. For a cell the ray crosses completely the
       midpoint is the slice plane a = n itself, so the sample is the bilinear interpolation
       of slice n in the other two axes (Joseph's method); only the first and last cells of a
       ray can be partial.
    5. Value: the trilinear interpolant of each rho_m (per-material density, one-hot for hard
       labels), with "clamp to edge" outside the voxel centres (a coordinate below 0 uses voxel
       0, above n - 1 uses voxel n - 1; the padding implements this).
    6. Line integral of material m (g/cm2) = sum over samples of weight * value_m, times the
       ray's length in mm (source to pixel centre) times 0.1 (mm -> cm).

    The interior slices step positions incrementally (s_b + (n - s_a) e_b / e_a computed by
    repeated addition, exact to < 1e-9 voxel here); a float32 port should compute each
    sample's position directly. Densities are the layout's stored float32 values.

    ``load_width``: ``vector_width(layout)``, how the density channels may be loaded (it changes the
    speed, not the numbers).
    """
    n_materials = line_integrals.shape[0]
    columns = line_integrals.shape[2]
    want_primary = weights.shape[0] > 0
    values = packed.view(np.float32)
    pi = ni + 2
    pij = pi * (nj + 2)
    for r in prange(row_start, row_stop):
        lanes = np.zeros(max(n_materials, 8))   # the vector loads add to all 8; acc is the first M
        acc = lanes[:n_materials]
        exponent = np.empty(weights.shape[0])
        for c in range(columns):
            e0, e1, e2, length_mm, t_in, t_out = _ray(r, c, source_ijk, origin_ijk, u_ijk, v_ijk, source_ras,
                                                      origin_ras, u_ras, v_ras, ni, nj, nk)
            for m in range(n_materials):
                acc[m] = 0.0
            if t_in < t_out:
                a0 = abs(e0)
                a1 = abs(e1)
                a2 = abs(e2)
                if a0 >= a1 and a0 >= a2:
                    sa, ea, na, stride_a = source_ijk[0], e0, ni, 1
                    sb, eb, stride_b = source_ijk[1], e1, pi
                    sc, ec, stride_c = source_ijk[2], e2, pij
                elif a1 >= a2:
                    sa, ea, na, stride_a = source_ijk[1], e1, nj, pi
                    sb, eb, stride_b = source_ijk[0], e0, 1
                    sc, ec, stride_c = source_ijk[2], e2, pij
                else:
                    sa, ea, na, stride_a = source_ijk[2], e2, nk, pij
                    sb, eb, stride_b = source_ijk[0], e0, 1
                    sc, ec, stride_c = source_ijk[1], e1, pi
                inv_ea = 1.0 / ea
                cell_tau = abs(inv_ea)
                p_in = sa + t_in * ea
                p_out = sa + t_out * ea
                lo = min(p_in, p_out)
                hi = max(p_in, p_out)
                n_lo = min(max(int64(math.floor(lo + 0.5)), 0), na - 1)
                n_hi = min(max(int64(math.floor(hi + 0.5)), 0), na - 1)
                # the first and last cells: possibly partial, sampled trilinearly at their midpoints
                n = n_lo
                while True:
                    p0 = max(lo, n - 0.5)
                    p1 = min(hi, n + 0.5)
                    if p1 > p0:
                        t = (0.5 * (p0 + p1) - sa) * inv_ea
                        _add_trilinear(packed, values, channels, use_labels, label_mask,
                                       source_ijk[0] + t * e0, source_ijk[1] + t * e1, source_ijk[2] + t * e2,
                                       ni, nj, nk, (p1 - p0) * cell_tau, acc)
                    if n >= n_hi:
                        break
                    n = n_hi
                if n_hi - n_lo > 1:
                    if use_labels:
                        _joseph_interior_labels(packed, values, label_mask, mixed_flag, acc, n_lo + 1, n_hi, sa,
                                                inv_ea, sb, eb, sc, ec, stride_a, stride_b, stride_c, cell_tau)
                    else:
                        _joseph_interior_fractions(channels, lanes, n_lo + 1, n_hi, sa, inv_ea, sb, eb, sc, ec,
                                                   stride_a, stride_b, stride_c, cell_tau, load_width)
            _finish_pixel(acc, length_mm, r, c, line_integrals, want_primary, mu_log2, weights, exponent, primary)


# ---------------------------------------------------------------------------------------------
# Siddon: exact path lengths through the nearest-voxel model.


@njit(inline="always")
def _axis_walk(s, e, index, n, stride):
    """First crossing tau, tau increment, flat-index step and voxels left along one axis."""
    if e > 0.0:
        return (index + 0.5 - s) / e, 1.0 / e, stride, n - 1 - index
    if e < 0.0:
        return (index - 0.5 - s) / e, -1.0 / e, -stride, index
    return np.inf, np.inf, 0, 0


@njit(inline="always")
def _siddon_start(source_ijk, e0, e1, e2, t_in, t_out, ni, nj, nk):
    """Entry voxel (padded flat index) and the per-axis walk state of a ray."""
    # the voxel just inside the entry point avoids ties on the boundary
    t_probe = t_in + 1e-9 * (t_out - t_in)
    i = min(max(int(math.floor(source_ijk[0] + t_probe * e0 + 0.5)), 0), ni - 1)
    j = min(max(int(math.floor(source_ijk[1] + t_probe * e1 + 0.5)), 0), nj - 1)
    k = min(max(int(math.floor(source_ijk[2] + t_probe * e2 + 0.5)), 0), nk - 1)
    pi = ni + 2
    pij = pi * (nj + 2)
    walk_i = _axis_walk(source_ijk[0], e0, i, ni, 1)
    walk_j = _axis_walk(source_ijk[1], e1, j, nj, pi)
    walk_k = _axis_walk(source_ijk[2], e2, k, nk, pij)
    return (k + 1) * pij + (j + 1) * pi + i + 1, walk_i, walk_j, walk_k


@njit(fastmath=True, nogil=True)
def _siddon_walk_labels(packed, values, label_mask, acc, index, walk_i, walk_j, walk_k, t_in, t_out):
    """acc[label] += density * tau-length of every voxel crossed, packed labels."""
    t_i, dt_i, step_i, left_i = walk_i
    t_j, dt_j, step_j, left_j = walk_j
    t_k, dt_k, step_k, left_k = walk_k
    t = t_in
    while True:
        bits = packed[index]
        value = _as_float32(bits)
        if t_i <= t_j and t_i <= t_k:
            t_next = t_i
            t_i += dt_i
            index += step_i
            left_i -= 1
            left = left_i
        elif t_j <= t_k:
            t_next = t_j
            t_j += dt_j
            index += step_j
            left_j -= 1
            left = left_j
        else:
            t_next = t_k
            t_k += dt_k
            index += step_k
            left_k -= 1
            left = left_k
        if t_next >= t_out:
            acc[bits & label_mask] += value * (t_out - t)
            break
        acc[bits & label_mask] += value * (t_next - t)
        t = t_next
        if left < 0:
            break


@njit(fastmath=True, nogil=True)
def _siddon_walk_fractions(channels, acc, index, walk_i, walk_j, walk_k, t_in, t_out):
    """acc[m] += rho_m * tau-length of every voxel crossed, density channels."""
    t_i, dt_i, step_i, left_i = walk_i
    t_j, dt_j, step_j, left_j = walk_j
    t_k, dt_k, step_k, left_k = walk_k
    t = t_in
    while True:
        voxel = index
        if t_i <= t_j and t_i <= t_k:
            t_next = t_i
            t_i += dt_i
            index += step_i
            left_i -= 1
            left = left_i
        elif t_j <= t_k:
            t_next = t_j
            t_j += dt_j
            index += step_j
            left_j -= 1
            left = left_j
        else:
            t_next = t_k
            t_k += dt_k
            index += step_k
            left_k -= 1
            left = left_k
        length = (t_out if t_next >= t_out else t_next) - t
        for m in range(acc.shape[0]):
            acc[m] += channels[voxel, m] * length
        if t_next >= t_out or left < 0:
            break
        t = t_next


@njit(parallel=True, fastmath=True, nogil=True, cache=True)
def siddon_rows(packed, channels, use_labels, label_mask, mixed_flag, nk, nj, ni,
                source_ijk, origin_ijk, u_ijk, v_ijk, source_ras, origin_ras, u_ras, v_ras,
                row_start, row_stop, mu_log2, weights, line_integrals, primary):
    """Fill line_integrals[:, rows, :] (g/cm2) and, if weights is non-empty, primary[rows, :]."""
    n_materials = line_integrals.shape[0]
    width = line_integrals.shape[2]
    want_primary = weights.shape[0] > 0
    values = packed.view(np.float32)
    for r in prange(row_start, row_stop):
        acc = np.zeros(n_materials)
        exponent = np.empty(weights.shape[0])
        for c in range(width):
            e0, e1, e2, length_mm, t_in, t_out = _ray(r, c, source_ijk, origin_ijk, u_ijk, v_ijk, source_ras,
                                                      origin_ras, u_ras, v_ras, ni, nj, nk)
            for m in range(n_materials):
                acc[m] = 0.0
            if t_in < t_out:
                index, walk_i, walk_j, walk_k = _siddon_start(source_ijk, e0, e1, e2, t_in, t_out, ni, nj, nk)
                if use_labels:
                    _siddon_walk_labels(packed, values, label_mask, acc, index, walk_i, walk_j, walk_k, t_in, t_out)
                else:
                    _siddon_walk_fractions(channels, acc, index, walk_i, walk_j, walk_k, t_in, t_out)
            _finish_pixel(acc, length_mm, r, c, line_integrals, want_primary, mu_log2, weights, exponent, primary)


# ---------------------------------------------------------------------------------------------
# Fixed-step trilinear march.


@njit(parallel=True, fastmath=True, nogil=True, cache=True)
def trilinear_rows(packed, channels, use_labels, label_mask, mixed_flag, nk, nj, ni,
                   source_ijk, origin_ijk, u_ijk, v_ijk, source_ras, origin_ras, u_ras, v_ras,
                   row_start, row_stop, mu_log2, weights, line_integrals, primary, step_mm):
    """Midpoint rule with ceil(span / step_mm) equal steps from the entry to the exit point; each
    sample is the trilinear interpolant of rho_m, as in Joseph's end cells."""
    n_materials = line_integrals.shape[0]
    width = line_integrals.shape[2]
    want_primary = weights.shape[0] > 0
    values = packed.view(np.float32)
    for r in prange(row_start, row_stop):
        acc = np.zeros(n_materials)
        exponent = np.empty(weights.shape[0])
        for c in range(width):
            e0, e1, e2, length_mm, t_in, t_out = _ray(r, c, source_ijk, origin_ijk, u_ijk, v_ijk, source_ras,
                                                      origin_ras, u_ras, v_ras, ni, nj, nk)
            for m in range(n_materials):
                acc[m] = 0.0
            if t_in < t_out:
                n_steps = max(1, int(math.ceil((t_out - t_in) * length_mm / step_mm)))
                dt = (t_out - t_in) / n_steps
                for s in range(n_steps):
                    t = t_in + (s + 0.5) * dt
                    _add_trilinear(packed, values, channels, use_labels, label_mask, source_ijk[0] + t * e0,
                                   source_ijk[1] + t * e1, source_ijk[2] + t * e2, ni, nj, nk, dt, acc)
            _finish_pixel(acc, length_mm, r, c, line_integrals, want_primary, mu_log2, weights, exponent, primary)


def set_threads(count: int | None) -> None:
    if count:
        numba.set_num_threads(max(1, min(int(count), numba.config.NUMBA_NUM_THREADS)))

"""Photon transport kernel (numba, CPU). Written to port line by line to CUDA C.

Only plain arrays and scalars cross the boundary; the maths uses + - * /, sqrt,
log, exp, floor and the explicit Philox generator below, nothing numba-specific
besides ``prange`` over independent chunks.

Random numbers: Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers:
as easy as 1, 2, 3"), counter-based. Photon ``n`` of a run with seed ``s`` uses
key (s mod 2^32, s div 2^32 mod 2^32) and counters (d, 0, n mod 2^32,
n div 2^32) for d = 0, 1, 2, ...; each block of four 32-bit words gives four
uniforms (w + 0.5) / 2^32 in (0, 1). A photon's history therefore depends only
on (seed, n): results are identical for any number of threads or chunks, and a
CUDA thread per photon reproduces them.

Tallies are 64-bit integers in fixed-point units (sums are exact and order
independent, so equal seeds give bit-identical images): energy in units of
2^-20 keV, squared energy in 2^-12 keV^2, photon weights in 2^-30.

Geometry: world in RAS mm. The CT box (voxel centres at integer ijk, nearest
voxel = the voxel containing the point) is filled with the voxel materials; the
rest of a sphere around source, CT and detector is air; outside it, vacuum.
Woodcock (delta) tracking inside the box with local majorants (the densest voxel
of each material in each block of 8^3 voxels, walked block by block); exact
exponential sampling in the homogeneous air outside.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Fixed-point quanta of the integer tallies.
ENERGY_QUANTUM = 2.0 ** -20          # keV
ENERGY2_QUANTUM = 2.0 ** -12         # keV^2
WEIGHT_QUANTUM = 2.0 ** -30          # photons

# Tally channels, per pixel.
T_PRIMARY = 0          # sum of E eta T over primary photons (energy quanta)
T_PRIMARY_SQ = 1       # sum of (E eta T)^2 over primary photons (energy2 quanta)
T_SCATTER = 2          # sum of E eta T over scattered photons
T_SCATTER_SQ = 3       # sum of (E eta T)^2 over scattered photons
T_SCATTER_E2 = 4       # sum of E^2 eta T over scattered photons (second moment of the signal)
T_SCATTER_COUNT = 5    # sum of eta T over scattered photons (absorbed photons; weight quanta)
N_TALLIES = 6

# Bookkeeping counters (photons; energies in energy quanta).
B_EMITTED, B_EMITTED_E = 0, 1
B_ABSORBED, B_ABSORBED_E = 2, 3          # photoelectric absorption (anywhere) and energy-cut absorption
B_COMPTON_E = 4                          # energy left locally by Compton electrons
B_PRIMARY_DET, B_PRIMARY_DET_E = 5, 6    # unscattered photons reaching the detector area
B_SCATTER_DET, B_SCATTER_DET_E = 7, 8    # scattered photons reaching the detector area
B_ESCAPED, B_ESCAPED_E = 9, 10           # photons leaving the world (or passing beside the detector)
B_COMPTON, B_RAYLEIGH, B_PHOTO = 11, 12, 13
B_VIRTUAL = 14                           # Woodcock virtual collisions
B_SINGLE_COMPTON_DET, B_SINGLE_RAYLEIGH_DET = 15, 16
N_BOOK = 17

_MASK32 = np.uint64(0xFFFFFFFF)
_PHILOX_M0 = np.uint64(0xD2511F53)
_PHILOX_M1 = np.uint64(0xCD9E8D57)
_PHILOX_W0 = np.uint64(0x9E3779B9)
_PHILOX_W1 = np.uint64(0xBB67AE85)
_TO_UNIT = 2.0 ** -32
_SHIFT32 = np.uint64(32)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_FOUR = np.uint64(4)

ENERGY_CUT_KEV = 1.0     # photons below this are absorbed locally (the data start at 1 keV)
_EPS_MM = 1e-6


@njit(inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds; words are held in uint64 (low 32 bits used)."""
    for _ in range(10):
        p0 = _PHILOX_M0 * c0
        p1 = _PHILOX_M1 * c2
        hi0, lo0 = p0 >> _SHIFT32, p0 & _MASK32
        hi1, lo1 = p1 >> _SHIFT32, p1 & _MASK32
        c0, c1, c2, c3 = (hi1 ^ c1 ^ k0) & _MASK32, lo1, (hi0 ^ c3 ^ k1) & _MASK32, lo0
        k0 = (k0 + _PHILOX_W0) & _MASK32
        k1 = (k1 + _PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


@njit(inline="always")
def uniform(state, buffer):
    """Next uniform in (0, 1). state: [photon_lo, photon_hi, draw, used, key0, key1] (uint64)."""
    if state[3] >= _FOUR:
        w0, w1, w2, w3 = philox4x32(state[2] & _MASK32, state[2] >> _SHIFT32, state[0], state[1], state[4], state[5])
        buffer[0] = (float(w0) + 0.5) * _TO_UNIT
        buffer[1] = (float(w1) + 0.5) * _TO_UNIT
        buffer[2] = (float(w2) + 0.5) * _TO_UNIT
        buffer[3] = (float(w3) + 0.5) * _TO_UNIT
        state[2] += _ONE
        state[3] = _ZERO
    value = buffer[state[3]]
    state[3] += _ONE
    return value


@njit(inline="always")
def _interp(table, row, energy, e0, inv_de, n_e):
    """Linear interpolation of table[row, :] on the uniform energy grid."""
    x = (energy - e0) * inv_de
    j = int(math.floor(x))
    if j < 0:
        return table[row, 0]
    if j >= n_e - 1:
        return table[row, n_e - 1]
    t = x - j
    return table[row, j] * (1.0 - t) + table[row, j + 1] * t


@njit(inline="always")
def _box_span(px, py, pz, dx, dy, dz, a, n0, n1, n2):
    """(t_enter, t_exit) in mm of the ray p + t d through the voxel box; a is RAS->ijk (3x4)."""
    t_in = -1e300
    t_out = 1e300
    for axis in range(3):
        s = a[axis, 0] * px + a[axis, 1] * py + a[axis, 2] * pz + a[axis, 3]
        e = a[axis, 0] * dx + a[axis, 1] * dy + a[axis, 2] * dz
        n = n0 if axis == 0 else (n1 if axis == 1 else n2)
        low = -0.5
        high = n - 0.5
        if abs(e) < 1e-15:
            if s < low or s > high:
                return 1e300, -1e300
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


@njit(inline="always")
def _mu_material(mu_fine, mu_src, m, energy, exact, src_bin, e0, inv_de, n_e):
    """Total mu/rho (cm2/g) of material row m."""
    if exact:
        return mu_src[m, 0, src_bin] + mu_src[m, 1, src_bin] + mu_src[m, 2, src_bin]
    return (_interp(mu_fine[m], 0, energy, e0, inv_de, n_e) + _interp(mu_fine[m], 1, energy, e0, inv_de, n_e)
            + _interp(mu_fine[m], 2, energy, e0, inv_de, n_e))


@njit(inline="always")
def _incoherent_function(s_fn, row, x, x_grid):
    n = x_grid.shape[0]
    x_max = x_grid[n - 1]   # the grid is quadratic: x_j = x_max (j / (n - 1))^2
    j = int(math.sqrt(x / x_max) * (n - 1))
    if j >= n - 1:
        return s_fn[row, n - 1]
    t = (x - x_grid[j]) / (x_grid[j + 1] - x_grid[j])
    return s_fn[row, j] * (1.0 - t) + s_fn[row, j + 1] * t


@njit(inline="always")
def _form_factor_squared(f2, row, x, x_grid):
    """F^2 at x, linear in y = x^2 between grid points (as the Rayleigh sampler assumes)."""
    n = x_grid.shape[0]
    x_max = x_grid[n - 1]
    j = int(math.sqrt(x / x_max) * (n - 1))
    if j >= n - 1:
        return f2[row, n - 1]
    y0 = x_grid[j] * x_grid[j]
    y1 = x_grid[j + 1] * x_grid[j + 1]
    t = (x * x - y0) / (y1 - y0)
    return f2[row, j] * (1.0 - t) + f2[row, j + 1] * t


@njit(cache=True)
def _dda_start(px, py, pz, dx, dy, dz, ras_to_ijk, bsize, nbi, nbj, nbk, blk, tnext, dtb, stepb):
    """Walk over blocks of bsize^3 voxels along p + t d (p inside the box, t in mm from p): the current block
    (blk), the t of the next block boundary on each axis (tnext), the t between boundaries (dtb), the
    direction of the steps (stepb). Block b holds voxels b*bsize .. b*bsize + bsize - 1."""
    for a in range(3):
        q = ras_to_ijk[a, 0] * px + ras_to_ijk[a, 1] * py + ras_to_ijk[a, 2] * pz + ras_to_ijk[a, 3]
        e = ras_to_ijk[a, 0] * dx + ras_to_ijk[a, 1] * dy + ras_to_ijk[a, 2] * dz
        n_a = nbi if a == 0 else (nbj if a == 1 else nbk)
        b = min(max(int(math.floor((q + 0.5) / bsize)), 0), n_a - 1)
        blk[a] = b
        if e > 1e-15:
            tnext[a] = ((b + 1) * bsize - 0.5 - q) / e
            dtb[a] = bsize / e
            stepb[a] = 1
        elif e < -1e-15:
            tnext[a] = (b * bsize - 0.5 - q) / e
            dtb[a] = -bsize / e
            stepb[a] = -1
        else:
            tnext[a] = 1e300
            dtb[a] = 1e300
            stepb[a] = 0


@njit(inline="always")
def _dda_advance(blk, tnext, dtb, stepb, nbi, nbj, nbk):
    """Step to the next block; returns False when the walk leaves the grid."""
    a = 0
    if tnext[1] < tnext[a]:
        a = 1
    if tnext[2] < tnext[a]:
        a = 2
    blk[a] += stepb[a]
    tnext[a] += dtb[a]
    n_a = nbi if a == 0 else (nbj if a == 1 else nbk)
    return 0 <= blk[a] < n_a


@njit(inline="always")
def _block_sigma(block_max, blk, nbi, nbj, mu_now, n_materials, use_fractions):
    """Local majorant (1/mm) of the current block: max_m of the block's largest density of material m times
    mu_m/rho at the current energy; for mixtures the smaller of sum_m of those and the block's largest whole
    density (column n_materials) times the largest mu_m/rho present (mu = rho sum_m f_m mu_m <= both)."""
    block = (blk[2] * nbj + blk[1]) * nbi + blk[0]
    s = 0.0
    largest_mu = 0.0
    for m in range(n_materials):
        v = block_max[block, m] * mu_now[m]
        if use_fractions:
            s += v
            if block_max[block, m] > 0.0 and mu_now[m] > largest_mu:
                largest_mu = mu_now[m]
        elif v > s:
            s = v
    if use_fractions:
        s = min(s, block_max[block, n_materials] * largest_mu)
    return s * 0.1 * (1.0 + 1e-6)


@njit(cache=True)
def _fill_mu(mu_now, mu_fine, mu_src, energy, exact, src_bin, e0, inv_de, n_e):
    """mu_now[m] = total mu/rho (cm2/g) of every material row at one energy."""
    for m in range(mu_now.shape[0]):
        mu_now[m] = _mu_material(mu_fine, mu_src, m, energy, exact, src_bin, e0, inv_de, n_e)


@njit(cache=True)
def _voxel_mu_in_block(qx, qy, qz, ras_to_ijk, ni, nj, nk, blk, bsize, density, labels, fractions, use_fractions,
                       mixture, mu_now):
    """(mu in 1/mm, density, voxel) of the voxel containing q, kept inside the current block (so that the
    block's majorant bounds it even when rounding puts q on a block face)."""
    fi = ras_to_ijk[0, 0] * qx + ras_to_ijk[0, 1] * qy + ras_to_ijk[0, 2] * qz + ras_to_ijk[0, 3]
    fj = ras_to_ijk[1, 0] * qx + ras_to_ijk[1, 1] * qy + ras_to_ijk[1, 2] * qz + ras_to_ijk[1, 3]
    fk = ras_to_ijk[2, 0] * qx + ras_to_ijk[2, 1] * qy + ras_to_ijk[2, 2] * qz + ras_to_ijk[2, 3]
    ii = min(max(int(math.floor(fi + 0.5)), blk[0] * bsize), min(blk[0] * bsize + bsize, ni) - 1)
    jj = min(max(int(math.floor(fj + 0.5)), blk[1] * bsize), min(blk[1] * bsize + bsize, nj) - 1)
    kk = min(max(int(math.floor(fk + 0.5)), blk[2] * bsize), min(blk[2] * bsize + bsize, nk) - 1)
    voxel = (kk * nj + jj) * ni + ii
    rho = density[voxel]
    mu = 0.0
    if use_fractions:
        for m in range(mixture.shape[0] - 1):
            mixture[m] = fractions[m, voxel] * mu_now[m]
            mu += mixture[m]
    else:
        mu = mu_now[labels[voxel]]
    return mu * rho * 0.1, rho, voxel


@njit(cache=True)
def _transmission(state, buffer, px, py, pz, dx, dy, dz, dist, mu_a, mu_b,
                  ras_to_ijk, ni, nj, nk, density, labels, fractions, use_fractions, mixture,
                  block_max, bsize, nbi, nbj, nbk, blk, tnext, dtb, stepb, air_density):
    """Unbiased estimates of exp(-int mu) from p to p + dist d at two energies in one pass (mu_a, mu_b: total
    mu/rho of every material row at each energy): ratio tracking (Novak et al. 2014) with the local
    majorant of each block (the larger of the two energies'), exact exponentials in the air outside."""
    n_materials = mu_a.shape[0] - 1
    t_in, t_out = _box_span(px, py, pz, dx, dy, dz, ras_to_ijk, ni, nj, nk)
    if t_in < 0.0:
        t_in = 0.0
    if t_out > dist:
        t_out = dist
    inside = 0.0
    value = 1.0
    value2 = 1.0
    if t_out > t_in:
        inside = t_out - t_in
        sx = px + t_in * dx
        sy = py + t_in * dy
        sz = pz + t_in * dz
        end = t_out - t_in
        _dda_start(sx, sy, sz, dx, dy, dz, ras_to_ijk, bsize, nbi, nbj, nbk, blk, tnext, dtb, stepb)
        sigma = max(_block_sigma(block_max, blk, nbi, nbj, mu_a, n_materials, use_fractions),
                    _block_sigma(block_max, blk, nbi, nbj, mu_b, n_materials, use_fractions))
        t = 0.0
        while True:
            t_end = min(min(tnext[0], tnext[1]), min(tnext[2], end))
            t_try = t - math.log(uniform(state, buffer)) / sigma if sigma > 0.0 else 1e300
            if t_try < t_end:
                t = t_try
                qx = sx + t * dx
                qy = sy + t * dy
                qz = sz + t * dz
                mu1, rho, voxel = _voxel_mu_in_block(qx, qy, qz, ras_to_ijk, ni, nj, nk, blk, bsize, density,
                                                     labels, fractions, use_fractions, mixture, mu_a)
                mu2, rho, voxel = _voxel_mu_in_block(qx, qy, qz, ras_to_ijk, ni, nj, nk, blk, bsize, density,
                                                     labels, fractions, use_fractions, mixture, mu_b)
                value *= 1.0 - mu1 / sigma
                value2 *= 1.0 - mu2 / sigma
                if value <= 1e-12 and value2 <= 1e-12:
                    return 0.0, 0.0
                continue
            t = t_end   # the exponential is memoryless: sampling restarts at the block face
            if t >= end or not _dda_advance(blk, tnext, dtb, stepb, nbi, nbj, nbk):
                break
            sigma = max(_block_sigma(block_max, blk, nbi, nbj, mu_a, n_materials, use_fractions),
                        _block_sigma(block_max, blk, nbi, nbj, mu_b, n_materials, use_fractions))
    length = (dist - inside) * air_density * 0.1
    return value * math.exp(-mu_a[n_materials] * length), value2 * math.exp(-mu_b[n_materials] * length)


@njit(cache=True)
def _rotate(dx, dy, dz, cos_t, phi):
    sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
    cp = math.cos(phi)
    sp = math.sin(phi)
    if abs(dz) > 0.99999:
        sign = 1.0 if dz > 0 else -1.0
        nx, ny, nz = sin_t * cp, sin_t * sp, cos_t * sign
    else:
        tmp = math.sqrt(1.0 - dz * dz)
        nx = cos_t * dx + sin_t * (dx * dz * cp - dy * sp) / tmp
        ny = cos_t * dy + sin_t * (dy * dz * cp + dx * sp) / tmp
        nz = cos_t * dz - sin_t * cp * tmp
    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
    return nx / norm, ny / norm, nz / norm


@njit(cache=True)
def sample_rayleigh(state, buffer, energy, row, y_grid, f2, cumulative, hc):
    """cos(theta) from Thomson x F^2(x); F^2 piecewise linear in y = x^2 (exact inverse within a cell)."""
    k = energy / hc
    y_max = k * k
    n = y_grid.shape[0]
    # cumulative at y_max
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if y_grid[mid] <= y_max:
            lo = mid
        else:
            hi = mid
    dy = y_max - y_grid[lo]
    width = y_grid[lo + 1] - y_grid[lo]
    slope = (f2[row, lo + 1] - f2[row, lo]) / width
    total = cumulative[row, lo] + f2[row, lo] * dy + 0.5 * slope * dy * dy
    while True:
        target = uniform(state, buffer) * total
        lo = 0
        hi = n - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cumulative[row, mid] <= target:
                lo = mid
            else:
                hi = mid
        rest = target - cumulative[row, lo]
        width = y_grid[lo + 1] - y_grid[lo]
        a = f2[row, lo]
        b = (f2[row, lo + 1] - a) / width
        # root of a t + b t^2 / 2 = rest, in the form that is stable for b -> 0
        t = 2.0 * rest / (a + math.sqrt(max(0.0, a * a + 2.0 * b * rest)))
        y = y_grid[lo] + t
        cos_t = 1.0 - 2.0 * y / y_max
        if cos_t < -1.0:
            cos_t = -1.0
        if uniform(state, buffer) * 2.0 <= 1.0 + cos_t * cos_t:
            return cos_t


@njit(cache=True)
def sample_compton(state, buffer, energy, row, x_grid, s_fn, s_inf, hc, rest_kev):
    """cos(theta) from Klein-Nishina x S(x)/S(inf), by rejection from uniform cos(theta)."""
    alpha = energy / rest_kev
    k = energy / hc
    while True:
        cos_t = 2.0 * uniform(state, buffer) - 1.0
        p = 1.0 / (1.0 + alpha * (1.0 - cos_t))
        kn = 0.5 * p * p * (p + 1.0 / p - 1.0 + cos_t * cos_t)   # <= 1
        s = _incoherent_function(s_fn, row, k * math.sqrt(0.5 * (1.0 - cos_t)), x_grid)
        if uniform(state, buffer) <= kn * s / s_inf[row]:
            return cos_t


@njit(cache=True)
def _score(tallies, chunk, scatter, row, col, energy, weight, tally_bin, tally_h, tally_w):
    """Add an expected absorbed energy energy x weight (weight = eta x grid x estimator weight)."""
    tr = int(math.floor(row + 0.5)) // tally_bin
    tc = int(math.floor(col + 0.5)) // tally_bin
    if tr >= tally_h:
        tr = tally_h - 1
    if tc >= tally_w:
        tc = tally_w - 1
    w = energy * weight
    if scatter:
        tallies[chunk, T_SCATTER, tr, tc] += np.int64(round(w / ENERGY_QUANTUM))
        tallies[chunk, T_SCATTER_SQ, tr, tc] += np.int64(round(w * w / ENERGY2_QUANTUM))
        tallies[chunk, T_SCATTER_E2, tr, tc] += np.int64(round(energy * w / ENERGY2_QUANTUM))
        tallies[chunk, T_SCATTER_COUNT, tr, tc] += np.int64(round(weight / WEIGHT_QUANTUM))
    else:
        tallies[chunk, T_PRIMARY, tr, tc] += np.int64(round(w / ENERGY_QUANTUM))
        tallies[chunk, T_PRIMARY_SQ, tr, tc] += np.int64(round(w * w / ENERGY2_QUANTUM))


@njit(cache=True)
def _grid_transmission(grid_on, grid_ratio, grid_open, grid_axis, source, hx, hy, hz, dx, dy, dz, det_normal,
                       cos_inc):
    """Focused-grid transmission of a photon hitting (hx, hy, hz) with direction d."""
    if not grid_on:
        return 1.0
    fx = hx - source[0]
    fy = hy - source[1]
    fz = hz - source[2]
    f_across = fx * grid_axis[0] + fy * grid_axis[1] + fz * grid_axis[2]
    f_normal = -(fx * det_normal[0] + fy * det_normal[1] + fz * det_normal[2])
    d_across = dx * grid_axis[0] + dy * grid_axis[1] + dz * grid_axis[2]
    deviation = d_across / cos_inc - f_across / f_normal
    return grid_open * max(0.0, 1.0 - grid_ratio * abs(deviation))


@njit(nogil=True, cache=True)
def transport(chunk, first_photon, n_photons, n_chunks, seed_lo, seed_hi,
              # volume
              density, labels, fractions, use_fractions, nk, nj, ni, ras_to_ijk,
              # materials: rows 0..M-1 voxel materials, row M world air
              e0, inv_de, mu_fine, src_energy, src_cdf, mu_src, block_max, bsize, nbi, nbj, nbk, air_density,
              y_grid, f2, f2_cumulative, x_grid, s_fn, s_inf, hc, rest_kev,
              # source and detector
              source, det_origin, det_u, det_v, det_normal, width, height, beam_window, cos_max,
              det_mu_t_fine, det_mu_t_src,
              grid_on, grid_ratio, grid_open, grid_axis,
              world_center, world_radius, tally_bin,
              forced, norm_compton, norm_rayleigh,
              tallies, book):
    """Transport chunk ``chunk`` of n_chunks equal parts of photons first_photon .. first_photon + n_photons - 1.

    Chunks are independent (the caller runs them on threads; the GIL is released) and write only to
    tallies[chunk] and book[chunk].

    mu_fine (M+1, 3, n_e) and mu_src (M+1, 3, B): photo, coherent, incoherent mu/rho (cm2/g).
    block_max (blocks, M + 1): per block of bsize^3 voxels (nbi x nbj x nbk blocks, i fastest) the largest density
    of each material (density x fraction for soft fractions) and the largest whole-voxel density: the local
    majorants of delta and ratio tracking.
    tallies (n_chunks, N_TALLIES, H_t, W_t) int64, book (n_chunks, N_BOOK) int64.
    beam_window (col_min, col_max, row_min, row_max): the collimated field, in detector pixel coordinates;
    cos_max: the largest cos(theta) inside it.

    ``forced``: scatter is scored by forced detection (a next-event estimator): at every real collision
    a point of the detector is drawn uniformly and the expected energy that this collision scatters
    toward it (coherently and incoherently, with the angular densities KN x S / norm_compton and
    Thomson x F^2 / norm_rayleigh per steradian, the transmission to the detector by ratio tracking,
    eta and the grid) is scored there; analog scattered photons reaching the detector are then counted
    in the bookkeeping only. Otherwise scatter is scored analogously when photons reach the detector.
    Primary photons are always scored analogously.
    """
    n_materials = mu_fine.shape[0] - 1
    n_e = mu_fine.shape[2]
    n_bins = src_energy.shape[0]
    tally_h = tallies.shape[2]
    tally_w = tallies.shape[3]
    u_len2 = det_u[0] * det_u[0] + det_u[1] * det_u[1] + det_u[2] * det_u[2]
    v_len2 = det_v[0] * det_v[0] + det_v[1] * det_v[1] + det_v[2] * det_v[2]
    cx = det_u[1] * det_v[2] - det_u[2] * det_v[1]
    cy = det_u[2] * det_v[0] - det_u[0] * det_v[2]
    cz = det_u[0] * det_v[1] - det_u[1] * det_v[0]
    detector_area = math.sqrt(cx * cx + cy * cy + cz * cz) * width * height
    state = np.zeros(6, dtype=np.uint64)
    buffer = np.zeros(4)
    mixture = np.zeros(n_materials + 1)
    mu_now = np.zeros(n_materials + 1)      # total mu/rho of every material row at the photon's energy
    mu_scat = np.zeros(n_materials + 1)     # ... at a forced-detection Compton energy
    blk = np.zeros(3, dtype=np.int64)
    tnext = np.zeros(3)
    dtb = np.zeros(3)
    stepb = np.zeros(3, dtype=np.int64)
    begin = first_photon + (n_photons * chunk) // n_chunks
    end = first_photon + (n_photons * (chunk + 1)) // n_chunks
    for photon in range(begin, end):
        state[0] = np.uint64(photon) & _MASK32
        state[1] = np.uint64(photon) >> _SHIFT32
        state[2] = _ZERO
        state[3] = _FOUR
        state[4] = np.uint64(seed_lo)
        state[5] = np.uint64(seed_hi)
        # --- source: energy bin from the spectrum, direction uniform in solid angle over the detector
        r = uniform(state, buffer)
        lo = 0
        hi = n_bins - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if src_cdf[mid] < r:
                lo = mid + 1
            else:
                hi = mid
        src_bin = lo
        energy = src_energy[src_bin]
        while True:
            cu = beam_window[0] + uniform(state, buffer) * (beam_window[1] - beam_window[0])
            rv = beam_window[2] + uniform(state, buffer) * (beam_window[3] - beam_window[2])
            tx = det_origin[0] + cu * det_u[0] + rv * det_v[0] - source[0]
            ty = det_origin[1] + cu * det_u[1] + rv * det_v[1] - source[1]
            tz = det_origin[2] + cu * det_u[2] + rv * det_v[2] - source[2]
            dist = math.sqrt(tx * tx + ty * ty + tz * tz)
            c = abs(tx * det_normal[0] + ty * det_normal[1] + tz * det_normal[2]) / dist
            ratio = c / cos_max
            if uniform(state, buffer) <= ratio * ratio * ratio:
                break
        dx, dy, dz = tx / dist, ty / dist, tz / dist
        px, py, pz = source[0], source[1], source[2]
        book[chunk, B_EMITTED] += 1
        book[chunk, B_EMITTED_E] += np.int64(round(energy / ENERGY_QUANTUM))
        n_compton = 0
        n_rayleigh = 0
        exact = True   # energy is still a source bin energy (use the exact per-bin tables)
        _fill_mu(mu_now, mu_fine, mu_src, energy, exact, src_bin, e0, inv_de, n_e)
        while True:
            t_in, t_out = _box_span(px, py, pz, dx, dy, dz, ras_to_ijk, ni, nj, nk)
            inside = t_in <= 0.0 < t_out
            interact = False
            material = n_materials
            if inside:
                _dda_start(px, py, pz, dx, dy, dz, ras_to_ijk, bsize, nbi, nbj, nbk, blk, tnext, dtb, stepb)
                sigma = _block_sigma(block_max, blk, nbi, nbj, mu_now, n_materials, use_fractions)
                t = 0.0
                while True:
                    t_end = min(min(tnext[0], tnext[1]), min(tnext[2], t_out))
                    t_try = t - math.log(uniform(state, buffer)) / sigma if sigma > 0.0 else 1e300
                    if t_try < t_end:
                        t = t_try
                        qx = px + t * dx
                        qy = py + t * dy
                        qz = pz + t * dz
                        mu_voxel, rho, voxel = _voxel_mu_in_block(qx, qy, qz, ras_to_ijk, ni, nj, nk, blk, bsize,
                                                                  density, labels, fractions, use_fractions,
                                                                  mixture, mu_now)
                        if uniform(state, buffer) * sigma < mu_voxel:
                            interact = True
                            px, py, pz = qx, qy, qz
                            if use_fractions:
                                pick = uniform(state, buffer) * mu_voxel / (rho * 0.1)
                                material = n_materials - 1
                                for m in range(n_materials):
                                    pick -= mixture[m]
                                    if pick <= 0.0:
                                        material = m
                                        break
                            else:
                                material = labels[voxel]
                            break
                        book[chunk, B_VIRTUAL] += 1
                        continue
                    t = t_end   # memoryless: sampling restarts at the block face with the next block's majorant
                    if t >= t_out or not _dda_advance(blk, tnext, dtb, stepb, nbi, nbj, nbk):
                        break
                    sigma = _block_sigma(block_max, blk, nbi, nbj, mu_now, n_materials, use_fractions)
                if not interact:
                    px += (t_out + _EPS_MM) * dx
                    py += (t_out + _EPS_MM) * dy
                    pz += (t_out + _EPS_MM) * dz
                    continue
            else:
                # --- world air: box entry, detector plane, world boundary, or an interaction
                t_box = t_in if (t_in > 0.0 and t_in < t_out) else 1e300
                t_det = 1e300
                toward = dx * det_normal[0] + dy * det_normal[1] + dz * det_normal[2]
                height_above = ((px - det_origin[0]) * det_normal[0] + (py - det_origin[1]) * det_normal[1]
                                + (pz - det_origin[2]) * det_normal[2])
                if toward < 0.0 and height_above > 0.0:
                    t_det = -height_above / toward
                ox = px - world_center[0]
                oy = py - world_center[1]
                oz = pz - world_center[2]
                b = ox * dx + oy * dy + oz * dz
                cc = ox * ox + oy * oy + oz * oz - world_radius * world_radius
                t_world = -b + math.sqrt(max(0.0, b * b - cc))
                mu_air = mu_now[n_materials] * air_density * 0.1
                step = -math.log(uniform(state, buffer)) / mu_air
                t_next = min(t_box, min(t_det, t_world))
                if step < t_next:
                    px += step * dx
                    py += step * dy
                    pz += step * dz
                    interact = True
                    material = n_materials
                elif t_det <= t_box and t_det <= t_world:
                    hx = px + t_det * dx
                    hy = py + t_det * dy
                    hz = pz + t_det * dz
                    col = ((hx - det_origin[0]) * det_u[0] + (hy - det_origin[1]) * det_u[1]
                           + (hz - det_origin[2]) * det_u[2]) / u_len2
                    row = ((hx - det_origin[0]) * det_v[0] + (hy - det_origin[1]) * det_v[1]
                           + (hz - det_origin[2]) * det_v[2]) / v_len2
                    if -0.5 <= col < width - 0.5 and -0.5 <= row < height - 0.5:
                        # --- score: expected absorbed energy E eta(E, theta) x grid transmission
                        cos_inc = -toward
                        if exact:
                            mu_t = det_mu_t_src[src_bin]
                        else:
                            mu_t = _interp(det_mu_t_fine.reshape(1, n_e), 0, energy, e0, inv_de, n_e)
                        eta = -math.expm1(-mu_t / cos_inc)
                        weight = eta * _grid_transmission(grid_on, grid_ratio, grid_open, grid_axis, source,
                                                          hx, hy, hz, dx, dy, dz, det_normal, cos_inc)
                        e_det = np.int64(round(energy / ENERGY_QUANTUM))
                        if n_compton + n_rayleigh == 0:
                            _score(tallies, chunk, False, row, col, energy, weight, tally_bin, tally_h, tally_w)
                            book[chunk, B_PRIMARY_DET] += 1
                            book[chunk, B_PRIMARY_DET_E] += e_det
                        else:
                            if not forced:
                                _score(tallies, chunk, True, row, col, energy, weight, tally_bin, tally_h,
                                       tally_w)
                            book[chunk, B_SCATTER_DET] += 1
                            book[chunk, B_SCATTER_DET_E] += e_det
                            if n_compton + n_rayleigh == 1:
                                if n_compton == 1:
                                    book[chunk, B_SINGLE_COMPTON_DET] += 1
                                else:
                                    book[chunk, B_SINGLE_RAYLEIGH_DET] += 1
                        break
                    # beside the detector: pass through its plane and go on
                    px += (t_det + _EPS_MM) * dx
                    py += (t_det + _EPS_MM) * dy
                    pz += (t_det + _EPS_MM) * dz
                    continue
                elif t_box <= t_world:
                    px += (t_box + _EPS_MM) * dx
                    py += (t_box + _EPS_MM) * dy
                    pz += (t_box + _EPS_MM) * dz
                    continue
                else:
                    book[chunk, B_ESCAPED] += 1
                    book[chunk, B_ESCAPED_E] += np.int64(round(energy / ENERGY_QUANTUM))
                    break
            # --- a real interaction with material `material` (n_materials = world air)
            if exact:
                photo = mu_src[material, 0, src_bin]
                coherent = mu_src[material, 1, src_bin]
                incoherent = mu_src[material, 2, src_bin]
            else:
                photo = _interp(mu_fine[material], 0, energy, e0, inv_de, n_e)
                coherent = _interp(mu_fine[material], 1, energy, e0, inv_de, n_e)
                incoherent = _interp(mu_fine[material], 2, energy, e0, inv_de, n_e)
            mu_total = photo + coherent + incoherent
            if forced:
                # --- next-event estimate toward a uniformly drawn detector point
                cu = -0.5 + uniform(state, buffer) * width
                rv = -0.5 + uniform(state, buffer) * height
                wx = det_origin[0] + cu * det_u[0] + rv * det_v[0] - px
                wy = det_origin[1] + cu * det_u[1] + rv * det_v[1] - py
                wz = det_origin[2] + cu * det_u[2] + rv * det_v[2] - pz
                dist = math.sqrt(wx * wx + wy * wy + wz * wz)
                wx /= dist
                wy /= dist
                wz /= dist
                cos_inc = -(wx * det_normal[0] + wy * det_normal[1] + wz * det_normal[2])
                if cos_inc > 0.0:
                    solid = detector_area * cos_inc / (dist * dist)   # sr per unit of the uniform draw
                    cos_t = dx * wx + dy * wy + dz * wz
                    k = energy / hc
                    x = k * math.sqrt(max(0.0, 0.5 * (1.0 - cos_t)))
                    hx = px + dist * wx
                    hy = py + dist * wy
                    hz = pz + dist * wz
                    grid_t = _grid_transmission(grid_on, grid_ratio, grid_open, grid_axis, source, hx, hy, hz,
                                                wx, wy, wz, det_normal, cos_inc)
                    if grid_t > 0.0:
                        # Rayleigh: same energy
                        density_r = (0.5 * (1.0 + cos_t * cos_t) * _form_factor_squared(f2, material, x, x_grid)
                                     / _interp(norm_rayleigh, material, energy, e0, inv_de, n_e))
                        alpha = energy / rest_kev
                        p = 1.0 / (1.0 + alpha * (1.0 - cos_t))
                        scattered = energy * p       # the Compton energy toward this point
                        _fill_mu(mu_scat, mu_fine, mu_src, scattered, False, src_bin, e0, inv_de, n_e)
                        trans, trans_c = _transmission(state, buffer, px, py, pz, wx, wy, wz, dist, mu_now, mu_scat,
                                                       ras_to_ijk, ni, nj, nk, density, labels, fractions,
                                                       use_fractions, mixture, block_max, bsize, nbi, nbj, nbk,
                                                       blk, tnext, dtb, stepb, air_density)
                        if exact:
                            mu_t = det_mu_t_src[src_bin]
                        else:
                            mu_t = _interp(det_mu_t_fine.reshape(1, n_e), 0, energy, e0, inv_de, n_e)
                        eta = -math.expm1(-mu_t / cos_inc)
                        weight = (coherent / mu_total) * density_r * solid * trans * eta * grid_t
                        col = cu
                        row = rv
                        if weight > 0.0:
                            _score(tallies, chunk, True, row, col, energy, weight, tally_bin, tally_h, tally_w)
                        # Compton: energy E' = E P, transmitted trans_c (same ratio-tracking pass)
                        if scattered >= ENERGY_CUT_KEV:
                            kn = 0.5 * p * p * (p + 1.0 / p - 1.0 + cos_t * cos_t)
                            density_c = (kn * _incoherent_function(s_fn, material, x, x_grid)
                                         / _interp(norm_compton, material, energy, e0, inv_de, n_e))
                            trans = trans_c
                            mu_t = _interp(det_mu_t_fine.reshape(1, n_e), 0, scattered, e0, inv_de, n_e)
                            eta = -math.expm1(-mu_t / cos_inc)
                            weight = (incoherent / mu_total) * density_c * solid * trans * eta * grid_t
                            if weight > 0.0:
                                _score(tallies, chunk, True, row, col, scattered, weight, tally_bin, tally_h,
                                       tally_w)
            pick = uniform(state, buffer) * mu_total
            if pick < photo:
                book[chunk, B_PHOTO] += 1
                book[chunk, B_ABSORBED] += 1
                book[chunk, B_ABSORBED_E] += np.int64(round(energy / ENERGY_QUANTUM))
                break
            if pick < photo + coherent:
                cos_t = sample_rayleigh(state, buffer, energy, material, y_grid, f2, f2_cumulative, hc)
                n_rayleigh += 1
                book[chunk, B_RAYLEIGH] += 1
            else:
                cos_t = sample_compton(state, buffer, energy, material, x_grid, s_fn, s_inf, hc, rest_kev)
                new_energy = energy / (1.0 + energy / rest_kev * (1.0 - cos_t))
                before = np.int64(round(energy / ENERGY_QUANTUM))
                after = np.int64(round(new_energy / ENERGY_QUANTUM))
                book[chunk, B_COMPTON_E] += before - after
                energy = new_energy
                exact = False
                _fill_mu(mu_now, mu_fine, mu_src, energy, exact, src_bin, e0, inv_de, n_e)
                n_compton += 1
                book[chunk, B_COMPTON] += 1
            dx, dy, dz = _rotate(dx, dy, dz, cos_t, 2.0 * math.pi * uniform(state, buffer))
            if energy < ENERGY_CUT_KEV:
                book[chunk, B_ABSORBED] += 1
                book[chunk, B_ABSORBED_E] += np.int64(round(energy / ENERGY_QUANTUM))
                break

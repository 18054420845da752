"""Monte Carlo scatter: set-up of the transport tables, the run, and the scaled, denoised result.

Physics (see kernel_cpu.py for the transport itself):

* source: a point at the focal spot emitting photons uniformly in solid angle
  into the pyramid that covers the detector (the beam collimated to the panel);
  energies sampled from the same (edge-split) spectral bins as the analytic
  primary, so both see identical spectra and cross-sections;
* interactions: photoelectric absorption (local deposition), Rayleigh
  (Thomson x F^2(x)) and Compton (Klein-Nishina x S(x), free-electron energy
  transfer, no Doppler broadening); totals from Elam via xraydb, the same data
  as the primary's mu/rho, angular shapes from F and S (``interactions``);
* geometry: the CT's voxels (nearest voxel, density x mixture of the material
  fractions) inside its box, air around it, vacuum beyond a sphere enclosing
  source, CT and detector;
* scoring: each photon reaching the panel adds its expected absorbed energy
  E eta(E, theta) (times the anti-scatter grid's transmission, when one is
  fitted) to its pixel, as primary (no interaction at all) or scatter.

Results are in keV of absorbed energy per mAs per image pixel, the units of
the analytic primary signal, plus per-pixel relative errors. The MC primary is
a built-in self-check against the analytic primary.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..detector import AIR_DENSITY_G_CM3, AntiScatterGrid, Detector
from ..errors import InputError, SimulationCancelled
from ..geometry import DetectorGeometry
from ..interactions import ELECTRON_REST_KEV, HC_KEV_ANGSTROM, material_interactions
from ..materials import MaterialVolume
from . import denoise

__all__ = ["ScatterSettings", "ScatterResult", "ScatterTransport", "simulate_scatter"]

DEFAULT_PHOTONS = 1_000_000
DEFAULT_SMOOTHING_MM = 6.0
DEFAULT_TALLY_PIXEL_MM = 2.0
ENERGY_STEP_KEV = 0.1
BLOCK_SIZE = 8          # voxels per side of the blocks that carry local majorants


@dataclass(frozen=True)
class ScatterSettings:
    photons: int = DEFAULT_PHOTONS
    seed: int = 0
    smoothing_mm: float = DEFAULT_SMOOTHING_MM   # Gaussian sigma at the detector
    tally_pixel_mm: float = DEFAULT_TALLY_PIXEL_MM
    forced_detection: bool = True                # next-event estimator for scatter (False: analog scoring)

    def validate(self) -> None:
        if not isinstance(self.photons, (int, np.integer)) or isinstance(self.photons, bool) or \
                not 1000 <= self.photons <= 10 ** 11:
            raise InputError(f"Scatter photon count {self.photons!r} is outside 1e3-1e11.",
                             "Give --scatter-photons, e.g. 1000000.")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or not 0 <= self.seed < 2 ** 64:
            raise InputError(f"Seed {self.seed!r} is not an integer in 0 .. 2^64-1.", "Give --seed as such an integer.")
        if not (math.isfinite(self.smoothing_mm) and self.smoothing_mm >= 0):
            raise InputError(f"Scatter smoothing {self.smoothing_mm!r} mm is negative.", "Give a sigma >= 0 mm.")
        if not (math.isfinite(self.tally_pixel_mm) and self.tally_pixel_mm > 0):
            raise InputError(f"Scatter tally pixel {self.tally_pixel_mm!r} mm is not positive.", "Give a size > 0 mm.")


@dataclass
class ScatterResult:
    scatter: np.ndarray                 # (H, W) keV per mAs per pixel, denoised
    scatter_second_moment: np.ndarray   # (H, W) keV^2 per mAs (compound-Poisson variance), denoised
    relative_error: np.ndarray          # (H, W) of the denoised scatter (statistical, 1 sigma)
    raw_scatter: np.ndarray             # (Ht, Wt) keV per mAs per pixel, on the tally grid, not smoothed
    scatter_variance_raw: np.ndarray    # (Ht, Wt) its variance
    mc_primary: np.ndarray              # (Ht, Wt) keV per mAs per pixel, on the tally grid
    mc_primary_variance: np.ndarray     # (Ht, Wt) its variance
    tally_block: int
    photons: int
    photons_per_mAs: float              # physical photons emitted into the field per mAs
    seconds: float
    bookkeeping: dict
    settings: ScatterSettings
    backend: str = "cpu"
    notes: list = field(default_factory=list)
    per_photon: dict = field(default_factory=dict)   # tally-grid sums per emitted photon (diagnostics, tests)

    @property
    def photons_per_second(self) -> float:
        return self.photons / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> dict:
        return {"photons": int(self.photons), "seed": int(self.settings.seed), "backend": self.backend,
                "seconds": round(self.seconds, 4), "photons_per_second": round(self.photons_per_second, 1),
                "smoothing_mm": self.settings.smoothing_mm, "tally_block_pixels": self.tally_block,
                "photons_per_mAs_emitted": self.photons_per_mAs, "bookkeeping": self.bookkeeping}


def _block_maxima(materials: MaterialVolume, block: int):
    """(blocks, M + 1) float64: the largest density of each material in each block of block^3 voxels (density x
    fraction for soft fractions) and, in the last column, the largest density x sum of fractions (the whole
    voxel's); blocks ordered i fastest; and (nbi, nbj, nbk). The last column bounds a mixed block's majorant
    far tighter than the sum over materials when the materials peak in different voxels (partial volume)."""
    density = materials.density
    nk, nj, ni = density.shape
    nbk, nbj, nbi = -(-nk // block), -(-nj // block), -(-ni // block)
    names = materials.names
    out = np.zeros((nbk, nbj, nbi, len(names) + 1))
    padded = np.zeros((nbk * block, nbj * block, nbi * block), dtype=np.float32)

    def block_max(values):
        padded[:nk, :nj, :ni] = values
        return padded.reshape(nbk, block, nbj, block, nbi, block).max(axis=(1, 3, 5))

    whole = np.zeros_like(density) if materials.fractions is not None else density
    for m in range(len(names)):
        if materials.fractions is None:
            values = np.where(materials.labels == m, density, np.float32(0.0))
        else:
            values = density * materials.fractions[m]
            whole += values   # whole is a fresh array here (zeros_like), never the density itself
        out[..., m] = block_max(values)
    out[..., len(names)] = block_max(whole)
    return np.ascontiguousarray(out.reshape(-1, len(names) + 1)), (nbi, nbj, nbk)


def _window_solid_angle(geometry: DetectorGeometry, window, samples: int = 512) -> float:
    """Solid angle (sr) of the rectangle window (pixel coordinates) seen from the source (midpoint rule)."""
    cols = window[0] + (np.arange(samples) + 0.5) * (window[1] - window[0]) / samples
    rows = window[2] + (np.arange(samples) + 0.5) * (window[3] - window[2]) / samples
    points = (geometry.detector_origin + cols[None, :, None] * geometry.u + rows[:, None, None] * geometry.v)
    rays = points - geometry.source
    distance = np.linalg.norm(rays, axis=-1)
    cos_incidence = np.abs(rays @ geometry.normal) / distance
    cell = float(np.linalg.norm(np.cross(geometry.u, geometry.v))) * (window[1] - window[0]) * (window[3] - window[2])
    return float(np.mean(cos_incidence / distance ** 2) * cell)


def angular_normalisations(energies, x_grid, s_fn, f2):
    """Z_C(E) = 2 pi int KN(mu) S(x) dmu and Z_R(E) = 2 pi int (1 + mu^2)/2 F^2(x) dmu per material row, with
    KN normalised to 1 forward (the kernel's shape) and S linear in x, F^2 linear in y = x^2 between the
    table's nodes, as the kernel interpolates them. Integrated in y on the nodes refined 8x (trapezoid)."""
    y_nodes = x_grid ** 2
    refine = 8
    fine_y = np.concatenate([np.linspace(a, b, refine, endpoint=False) for a, b in zip(y_nodes[:-1], y_nodes[1:])]
                            + [y_nodes[-1:]])
    fine_x = np.sqrt(fine_y)
    rows = s_fn.shape[0]
    s_vals = np.stack([np.interp(fine_x, x_grid, s_fn[r]) for r in range(rows)])
    f2_vals = np.stack([np.interp(fine_y, y_nodes, f2[r]) for r in range(rows)])
    norm_c = np.empty((rows, energies.size))
    norm_r = np.empty((rows, energies.size))
    for index, energy in enumerate(energies):
        k2 = (energy / HC_KEV_ANGSTROM) ** 2
        cut = np.searchsorted(fine_y, k2)
        y = np.concatenate([fine_y[:cut], [k2]])
        mu = 1.0 - 2.0 * y / k2
        alpha = energy / ELECTRON_REST_KEV
        p = 1.0 / (1.0 + alpha * (1.0 - mu))
        kn = 0.5 * p * p * (p + 1.0 / p - 1.0 + mu * mu)
        thomson = 0.5 * (1.0 + mu * mu)
        jacobian = 2.0 / k2           # |dmu / dy|
        for r in range(rows):
            s_row = np.concatenate([s_vals[r, :cut], [np.interp(np.sqrt(k2), x_grid, s_fn[r])]])
            f_row = np.concatenate([f2_vals[r, :cut], [np.interp(k2, y_nodes, f2[r])]])
            norm_c[r, index] = 2 * np.pi * jacobian * np.trapezoid(kn * s_row, y)
            norm_r[r, index] = 2 * np.pi * jacobian * np.trapezoid(thomson * f_row, y)
    return np.ascontiguousarray(norm_c), np.ascontiguousarray(norm_r)


def _quadratic_grid_ok(x: np.ndarray) -> bool:
    expected = x[-1] * (np.arange(x.size) / (x.size - 1)) ** 2
    return np.allclose(x, expected, rtol=1e-9, atol=1e-12)


class ScatterTransport:
    """Tables for one material volume and one spectrum/detector model, reusable across poses."""

    def __init__(self, materials: MaterialVolume, primary_model, detector: Detector | None = None,
                 grid: AntiScatterGrid | None = None, air_density_g_cm3: float = AIR_DENSITY_G_CM3):
        self.air_density = float(air_density_g_cm3)
        self.materials = materials
        self.model = primary_model
        self.detector = detector
        self.grid = grid
        names = list(materials.names)
        rows = names + ["air"]
        m = len(names)
        top = float(np.max(primary_model.energies_keV)) + 1.0
        self.e0 = 1.0
        self.fine_energies = np.arange(self.e0, top + ENERGY_STEP_KEV / 2, ENERGY_STEP_KEV)
        data = [material_interactions(name) for name in rows]
        self.mu_fine = np.ascontiguousarray(np.stack([d.partials(self.fine_energies) for d in data]))
        src = primary_model.energies_keV
        mu_src = np.stack([d.partials(src) for d in data])   # (M+1, 3, B)
        totals = np.vstack([primary_model.mu, primary_model.mu_air[None]])
        # Scale the partials to the primary model's totals so the MC primary sees exactly its mu.
        mu_src *= (totals / mu_src.sum(axis=1))[:, None, :]
        self.mu_src = np.ascontiguousarray(mu_src)
        fluence = primary_model.fluence
        self.src_energy = np.ascontiguousarray(src, dtype=np.float64)
        cdf = np.cumsum(fluence) / fluence.sum()
        cdf[-1] = 1.0
        self.src_cdf = cdf
        self.src_fluence_total = float(fluence.sum())   # photons per mAs per mm2 at 1 m
        self.block_size = BLOCK_SIZE
        self.block_max, self.blocks = _block_maxima(materials, BLOCK_SIZE)
        x = data[0].x
        if not _quadratic_grid_ok(x):
            raise RuntimeError("the interaction table's momentum-transfer grid is not quadratic")
        self.x_grid = np.ascontiguousarray(x)
        self.y_grid = np.ascontiguousarray(x * x)
        self.f2 = np.ascontiguousarray(np.stack([d.form_factor_squared for d in data]))
        steps = np.diff(self.y_grid)[None, :] * 0.5 * (self.f2[:, 1:] + self.f2[:, :-1])
        self.f2_cumulative = np.ascontiguousarray(np.concatenate([np.zeros((len(rows), 1)),
                                                                  np.cumsum(steps, axis=1)], axis=1))
        self.s_fn = np.ascontiguousarray(np.stack([d.incoherent_function for d in data]))
        self.s_inf = np.ascontiguousarray(np.array([max(d.electrons_per_gram_mol, float(d.incoherent_function.max()))
                                                    for d in data]))
        self.norm_compton, self.norm_rayleigh = angular_normalisations(
            self.fine_energies, self.x_grid, self.s_fn, self.f2)
        if detector is not None:
            self.det_mu_t_fine = np.ascontiguousarray(detector.attenuation_per_cos(self.fine_energies))
            self.det_mu_t_src = np.ascontiguousarray(detector.attenuation_per_cos(src))
        else:
            self.det_mu_t_fine = np.full(self.fine_energies.size, 1e3)
            self.det_mu_t_src = np.full(src.size, 1e3)
        self.density = np.ascontiguousarray(materials.density.ravel(), dtype=np.float32)
        self.labels = np.ascontiguousarray(materials.labels.ravel(), dtype=np.uint8)
        if materials.fractions is not None:
            self.fractions = np.ascontiguousarray(materials.fractions.reshape(m, -1), dtype=np.float32)
            self.use_fractions = True
        else:
            self.fractions = np.zeros((1, 1), dtype=np.float32)
            self.use_fractions = False
        self.ras_to_ijk = np.ascontiguousarray(np.linalg.inv(materials.ijk_to_ras)[:3, :])
        self._device_tables = {}    # launcher id -> kernel_cuda.DeviceTables

    def run(self, geometry: DetectorGeometry, settings: ScatterSettings, progress=None,
            threads: int | None = None, beam_window=None, device: str = "cpu", launcher=None) -> ScatterResult:
        """Transport ``settings.photons`` photons. ``beam_window`` (col_min, col_max, row_min, row_max) in
        pixel coordinates collimates the beam to part of the detector (default: all of it, edges at -0.5
        and size - 0.5); ``threads`` sets the number of independent chunks (results do not depend on it).

        ``device``: ``cpu`` (numba threads), ``cuda`` (the GPU; CudaUnavailable says why not) or ``auto``
        (the GPU when one works, else the CPU). ``launcher`` picks a CUDA launcher (tests); the same seed
        gives the same images on one backend, and statistically equal ones across backends."""
        import numba

        settings.validate()
        if device not in ("cpu", "cuda", "auto"):
            raise InputError(f"Unknown scatter device {device!r}.", "Give device='cpu', 'cuda' or 'auto'.")
        if launcher is None and device in ("cuda", "auto"):
            from ..cuda import CudaUnavailable
            from ..cuda.probe import get_launcher

            try:
                launcher = get_launcher()
            except CudaUnavailable:
                if device == "cuda":
                    raise
        start = time.perf_counter()
        height, width = geometry.shape
        pitch = min(geometry.pixel_spacing)
        block = max(1, int(settings.tally_pixel_mm / pitch))
        tally_h, tally_w = -(-height // block), -(-width // block)
        normal = geometry.normal    # unit normal pointing from the detector toward the source
        if beam_window is None:
            beam_window = (-0.5, width - 0.5, -0.5, height - 0.5)
        window = np.ascontiguousarray(beam_window, dtype=np.float64)
        if not (window[0] < window[1] and window[2] < window[3]):
            raise InputError(f"Empty beam window {tuple(window)}.", "Give col_min < col_max and row_min < row_max.")
        cos_max = self._cos_max(geometry, window)
        grid = self.grid
        grid_axis = grid.across_unit(geometry) if grid is not None else np.zeros(3)
        centre, radius = self._world_sphere(geometry)
        seed = int(settings.seed)
        nk, nj, ni = self.materials.density.shape
        arguments = dict(
            first_photon=0, n_photons=0, seed_lo=seed & 0xFFFFFFFF, seed_hi=(seed >> 32) & 0xFFFFFFFF,
            use_fractions=self.use_fractions, nk=nk, nj=nj, ni=ni, ras_to_ijk=self.ras_to_ijk,
            e0=self.e0, inv_de=1.0 / ENERGY_STEP_KEV, n_e=self.fine_energies.size, n_bins=self.src_energy.size,
            n_materials=len(self.materials.names), bsize=self.block_size, nbi=self.blocks[0], nbj=self.blocks[1],
            nbk=self.blocks[2], air_density=self.air_density, n_x=self.x_grid.size, hc=HC_KEV_ANGSTROM,
            rest_kev=ELECTRON_REST_KEV, source=np.ascontiguousarray(geometry.source),
            det_origin=np.ascontiguousarray(geometry.detector_origin), det_u=np.ascontiguousarray(geometry.u),
            det_v=np.ascontiguousarray(geometry.v), det_normal=np.ascontiguousarray(normal), width=int(width),
            height=int(height), beam_window=window, cos_max=float(cos_max), grid_on=grid is not None,
            grid_ratio=float(grid.ratio) if grid is not None else 0.0,
            grid_open=float(grid.open_fraction) if grid is not None else 1.0,
            grid_axis=np.ascontiguousarray(grid_axis, dtype=np.float64), world_center=centre,
            world_radius=float(radius), tally_bin=int(block), forced=bool(settings.forced_detection),
            tally_h=tally_h, tally_w=tally_w)
        notes = []
        if launcher is not None:
            try:
                tallies, book, backend = self._run_cuda(launcher, arguments, settings, progress)
            except SimulationCancelled:
                raise
            except Exception as error:  # noqa: BLE001 - compiler, driver and memory errors come in many types
                if device != "auto":
                    raise
                from ..cuda import mark_broken

                text = str(error).strip()
                why = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
                mark_broken(launcher.name, why)
                notes.append(f"the CUDA Monte Carlo failed through {launcher.name} ({why}); ran on the CPU")
                launcher = None
        if launcher is None:
            tallies, book = self._run_cpu(arguments, settings, progress, threads or numba.get_num_threads())
            backend = "cpu"
        seconds = time.perf_counter() - start
        result = self._result(geometry, settings, tallies, book, block, seconds, window)
        result.backend = backend
        result.notes.extend(notes)
        return result

    def _run_cpu(self, a: dict, settings: ScatterSettings, progress, threads: int):
        from . import kernel_cpu as kernel

        n_chunks = max(1, int(threads))
        tallies = np.zeros((n_chunks, kernel.N_TALLIES, a["tally_h"], a["tally_w"]), dtype=np.int64)
        book = np.zeros((n_chunks, kernel.N_BOOK), dtype=np.int64)
        batches = max(1, min(16, settings.photons // 50_000))
        done = 0
        pool = ThreadPoolExecutor(max_workers=n_chunks) if n_chunks > 1 else None
        try:
            for batch in range(batches):
                count = settings.photons * (batch + 1) // batches - done
                arguments = (
                    done, count, n_chunks, a["seed_lo"], a["seed_hi"],
                    self.density, self.labels, self.fractions, self.use_fractions, a["nk"], a["nj"], a["ni"],
                    self.ras_to_ijk, self.e0, a["inv_de"], self.mu_fine, self.src_energy, self.src_cdf, self.mu_src,
                    self.block_max, self.block_size, a["nbi"], a["nbj"], a["nbk"], self.air_density,
                    self.y_grid, self.f2, self.f2_cumulative, self.x_grid, self.s_fn, self.s_inf, a["hc"],
                    a["rest_kev"], a["source"], a["det_origin"], a["det_u"], a["det_v"], a["det_normal"],
                    a["width"], a["height"], a["beam_window"], a["cos_max"], self.det_mu_t_fine, self.det_mu_t_src,
                    a["grid_on"], a["grid_ratio"], a["grid_open"], a["grid_axis"],
                    a["world_center"], a["world_radius"], a["tally_bin"], a["forced"], self.norm_compton,
                    self.norm_rayleigh, tallies, book)
                if pool is None:
                    kernel.transport(0, *arguments)
                else:
                    list(pool.map(lambda chunk: kernel.transport(chunk, *arguments), range(n_chunks)))
                done += count
                if progress is not None:
                    progress(done / settings.photons)
        finally:
            if pool is not None:
                pool.shutdown()
        return tallies.sum(axis=0), book.sum(axis=0)

    def _run_cuda(self, launcher, a: dict, settings: ScatterSettings, progress):
        from . import kernel_cpu as kernel
        from . import kernel_cuda

        tables = self._device_tables.get(id(launcher))
        if tables is None or tables.launcher is not launcher or tables.buffers is None:
            tables = self._device_tables[id(launcher)] = kernel_cuda.DeviceTables(launcher, self)
        shape = (kernel.N_TALLIES, a["tally_h"], a["tally_w"])
        tallies = np.zeros(shape, dtype=np.int64)
        book = np.zeros(kernel.N_BOOK, dtype=np.int64)
        # batches of at least 2^22 photons keep the GPU busy; progress and cancel act between them
        batches = max(1, min(16, settings.photons // 2 ** 22))
        done = 0
        for batch in range(batches):
            count = settings.photons * (batch + 1) // batches - done
            part_tallies, part_book = kernel_cuda.run_batch(launcher, tables, dict(a, first_photon=done,
                                                                                    n_photons=count), shape)
            tallies += part_tallies
            book += part_book
            done += count
            if progress is not None:
                progress(done / settings.photons)
        return tallies, book, f"cuda-{launcher.name}"

    # ------------------------------------------------------------------
    def _cos_max(self, geometry: DetectorGeometry, window) -> float:
        """Largest cos(theta) over the beam window: at the point nearest the foot of the perpendicular."""
        n = geometry.normal
        foot = geometry.source - np.dot(geometry.source - geometry.detector_origin, n) * n
        rel = foot - geometry.detector_origin
        col = np.clip(np.dot(rel, geometry.u) / np.dot(geometry.u, geometry.u), window[0], window[1])
        row = np.clip(np.dot(rel, geometry.v) / np.dot(geometry.v, geometry.v), window[2], window[3])
        point = geometry.detector_origin + col * geometry.u + row * geometry.v
        ray = point - geometry.source
        return float(abs(np.dot(ray, n)) / np.linalg.norm(ray))

    def _world_sphere(self, geometry: DetectorGeometry):
        shape = self.materials.density.shape
        corners_ijk = np.array([[i, j, k] for i in (-0.5, shape[2] - 0.5) for j in (-0.5, shape[1] - 0.5)
                                for k in (-0.5, shape[0] - 0.5)])
        box = corners_ijk @ self.materials.ijk_to_ras[:3, :3].T + self.materials.ijk_to_ras[:3, 3]
        det = np.array([geometry.pixel_center(c, r) for c in (-0.5, geometry.width - 0.5)
                        for r in (-0.5, geometry.height - 0.5)])
        points = np.vstack([box, det, geometry.source[None]])
        centre = points.mean(axis=0)
        radius = float(np.max(np.linalg.norm(points - centre, axis=1))) + 100.0
        return np.ascontiguousarray(centre), radius

    def _result(self, geometry, settings, tallies, book, block, seconds, window) -> ScatterResult:
        from . import kernel_cpu as kernel

        height, width = geometry.shape
        solid_angle = _window_solid_angle(geometry, window)
        photons_per_mAs = self.src_fluence_total * 1.0e6 * solid_angle
        n = settings.photons
        scale = photons_per_mAs / n          # physical photons per mAs per simulated photon
        counts = np.ones((height, width))
        block_pixels = np.add.reduceat(np.add.reduceat(counts, np.arange(0, height, block), axis=0),
                                       np.arange(0, width, block), axis=1)

        def mean_and_variance(sum_channel, square_channel):
            total = tallies[sum_channel].astype(np.float64) * kernel.ENERGY_QUANTUM
            squares = tallies[square_channel].astype(np.float64) * kernel.ENERGY2_QUANTUM
            mean = total / n
            variance = np.clip(squares / n - mean ** 2, 0.0, None) / max(n - 1, 1)
            return mean * photons_per_mAs / block_pixels, variance * (photons_per_mAs / block_pixels) ** 2

        scatter, scatter_var = mean_and_variance(kernel.T_SCATTER, kernel.T_SCATTER_SQ)
        primary, primary_var = mean_and_variance(kernel.T_PRIMARY, kernel.T_PRIMARY_SQ)
        second = tallies[kernel.T_SCATTER_E2].astype(np.float64) * kernel.ENERGY2_QUANTUM * scale / block_pixels
        sigma_px = settings.smoothing_mm / (block * min(geometry.pixel_spacing))
        smooth_scatter, smooth_var = denoise.smooth_with_variance(scatter, scatter_var, sigma_px)
        smooth_second = denoise.smooth(second, sigma_px)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(smooth_scatter > 0, np.sqrt(smooth_var) / smooth_scatter, np.inf)
        scatter_full = denoise.upsample_bilinear(smooth_scatter, block, (height, width))
        second_full = denoise.upsample_bilinear(smooth_second, block, (height, width))
        rel_full = denoise.upsample_bilinear(np.where(np.isfinite(rel), rel, 1e3), block, (height, width))
        q = kernel.ENERGY_QUANTUM
        names = ("emitted", "emitted_keV", "absorbed", "absorbed_keV", "compton_deposit_keV", "primary_at_detector",
                 "primary_at_detector_keV", "scatter_at_detector", "scatter_at_detector_keV", "escaped",
                 "escaped_keV", "compton", "rayleigh", "photoelectric", "virtual_collisions",
                 "single_compton_at_detector", "single_rayleigh_at_detector")
        bookkeeping = {}
        for index, name in enumerate(names):
            value = int(book[index])
            bookkeeping[name] = value * q if name.endswith("_keV") else value
        bookkeeping["quanta"] = {name: int(book[i]) for i, name in enumerate(names) if name.endswith("_keV")}
        bookkeeping["energy_quantum_keV"] = q
        per_photon = {"primary_keV": tallies[kernel.T_PRIMARY] * kernel.ENERGY_QUANTUM / n,
                      "scatter_keV": tallies[kernel.T_SCATTER] * kernel.ENERGY_QUANTUM / n,
                      "scatter_photons": tallies[kernel.T_SCATTER_COUNT] * kernel.WEIGHT_QUANTUM / n,
                      "scatter_photons_raw": tallies[kernel.T_SCATTER_COUNT].copy(),
                      "primary_raw": tallies[kernel.T_PRIMARY].copy(), "scatter_raw": tallies[kernel.T_SCATTER].copy()}
        return ScatterResult(per_photon=per_photon, scatter=scatter_full.astype(np.float64), scatter_second_moment=second_full,
                             relative_error=rel_full, raw_scatter=scatter, scatter_variance_raw=scatter_var, mc_primary=primary,
                             mc_primary_variance=primary_var, tally_block=block, photons=n,
                             photons_per_mAs=photons_per_mAs, seconds=seconds, bookkeeping=bookkeeping,
                             settings=settings)


def simulate_scatter(materials: MaterialVolume, geometry: DetectorGeometry, primary_model,
                     settings: ScatterSettings | None = None, detector: Detector | None = None,
                     grid: AntiScatterGrid | None = None, progress=None) -> ScatterResult:
    """One-shot: build the tables and run (use ScatterTransport to reuse tables across poses)."""
    return ScatterTransport(materials, primary_model, detector, grid).run(geometry, settings or ScatterSettings(),
                                                                          progress=progress)

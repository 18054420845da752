"""Sharp-edged analytic phantoms with partial-volume voxels, and their exact line integrals.

Real CT has sharp tissue edges and partial-volume voxels, so this (not a smooth
graded profile) is the accuracy case that matters for a projector.

A phantom is a tree of uniform bodies (ellipsoids and finite cylinders): each
body lies wholly inside one earlier body (its parent) or outside all earlier
ones, and replaces its parent's density where it is. Densities come from HU
through the DeepDRR fit, on both of its branches (HU < 0 and HU > 0).

``voxelise`` box-filters the phantom onto any voxel grid (oblique and
anisotropic too): voxels that a surface may cross are supersampled S x S x S
(midpoints), the rest take the value at their centre. The result is a density
volume and per-material mass fractions, as a CT and a segmentation network
would give them. ``exact`` integrates the continuous phantom along rays in
closed form (chord lengths through quadrics and slabs), which nothing in the
projector computes, so the two cannot agree by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from DeepDRRSlicerLib.geometry import CArm, geometry_from_pose
from DeepDRRSlicerLib.materials import hu_to_density


@dataclass
class Body:
    """Ellipsoid ((x-c)^T Q (x-c) <= 1) or finite cylinder (radial quadric and |(x-c).axis| <= half_length)."""

    center: np.ndarray
    quadric: np.ndarray
    hu: float
    material: str
    parent: int = -1                  # index of the enclosing body, -1 for none
    min_semi_axis: float = 0.0
    axis: np.ndarray | None = None    # cylinders only
    half_length: float = np.inf
    radius: float = 0.0

    @property
    def density(self) -> float:
        return float(hu_to_density(np.float32(self.hu)))

    @classmethod
    def ellipsoid(cls, center, semi_axes, hu, material, rotation=np.eye(3), parent=-1):
        rotation = np.asarray(rotation, dtype=float)
        quadric = rotation @ np.diag(1.0 / np.asarray(semi_axes, dtype=float) ** 2) @ rotation.T
        return cls(np.asarray(center, float), quadric, hu, material, parent, float(np.min(semi_axes)))

    @classmethod
    def cylinder(cls, center, axis, radius, half_length, hu, material, parent=-1):
        axis = np.asarray(axis, dtype=float)
        axis = axis / np.linalg.norm(axis)
        quadric = (np.eye(3) - np.outer(axis, axis)) / radius**2
        return cls(np.asarray(center, float), quadric, hu, material, parent, float(radius), axis,
                   float(half_length), float(radius))

    def inside(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=float) - self.center
        inside = np.einsum("...i,ij,...j->...", p, self.quadric, p) <= 1.0
        if self.axis is not None:
            inside &= np.abs(p @ self.axis) <= self.half_length
        return inside

    def near_surface(self, points, margin_mm: float) -> np.ndarray:
        """True where the surface may pass within margin_mm (conservative)."""
        p = np.asarray(points, dtype=float) - self.center
        level = np.sqrt(np.einsum("...i,ij,...j->...", p, self.quadric, p))
        # for a convex body scaled about its centre, level r lies at least |r - 1| * (smallest semi-axis)
        # from the surface
        near = np.abs(level - 1.0) * self.min_semi_axis <= margin_mm
        if self.axis is not None:
            axial = np.abs(p @ self.axis)
            near = (near & (axial <= self.half_length + margin_mm)) | (
                (np.abs(axial - self.half_length) <= margin_mm) & (level * self.radius <= self.radius + margin_mm))
        return near

    def chord_mm(self, start, end) -> np.ndarray:
        """Length (mm) of the segment start -> end inside the body."""
        start = np.asarray(start, dtype=float)
        d = np.asarray(end, dtype=float) - start
        p = start - self.center
        a = np.einsum("...i,ij,...j->...", d, self.quadric, d)
        b = 2.0 * np.einsum("...i,ij,...j->...", d, self.quadric, p)
        c = np.einsum("...i,ij,...j->...", p, self.quadric, p) - 1.0
        disc = b * b - 4 * a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = np.where(a > 0, (-b - root) / (2 * a), -np.inf)
            t1 = np.where(a > 0, (-b + root) / (2 * a), np.inf)
        hit = (disc > 0) | (a <= 0) & (c <= 0)
        if self.axis is not None:
            pa, da = p @ self.axis, d @ self.axis
            with np.errstate(divide="ignore", invalid="ignore"):
                s0 = (-self.half_length - pa) / da
                s1 = (self.half_length - pa) / da
            flat = np.abs(da) < 1e-15
            lo = np.where(flat, np.where(np.abs(pa) <= self.half_length, -np.inf, np.inf), np.minimum(s0, s1))
            hi = np.where(flat, np.where(np.abs(pa) <= self.half_length, np.inf, -np.inf), np.maximum(s0, s1))
            t0, t1 = np.maximum(t0, lo), np.minimum(t1, hi)
        t0, t1 = np.clip(t0, 0.0, 1.0), np.clip(t1, 0.0, 1.0)
        return np.where(hit & (t1 > t0), (t1 - t0) * np.linalg.norm(d, axis=-1), 0.0)


@dataclass
class SharpPhantom:
    bodies: list
    materials: tuple = ("air", "soft_tissue", "bone")
    _checked: bool = field(default=False, repr=False)

    def check_tree(self, samples: int = 20000, seed: int = 0) -> None:
        """Assert the containment tree: points of each body lie inside its parent and in no other body."""
        rng = np.random.default_rng(seed)
        for index, body in enumerate(self.bodies):
            extent = 1.0 / np.sqrt(np.linalg.eigvalsh(body.quadric + 1e-12 * np.eye(3)).min())
            extent = min(extent, body.half_length + body.radius) if body.axis is not None else extent
            points = body.center + rng.uniform(-extent, extent, (samples, 3))
            points = points[body.inside(points)]
            assert len(points) > 100, index
            for other_index, other in enumerate(self.bodies):
                if other_index == index:
                    continue
                inside_other = other.inside(points)
                if other_index == body.parent:
                    assert inside_other.all(), (index, other_index)
                elif other.parent != index and other_index != body.parent:
                    assert not inside_other.any() or other_index < index and self._is_ancestor(other_index, index), \
                        (index, other_index)

    def _is_ancestor(self, candidate: int, index: int) -> bool:
        while index >= 0:
            index = self.bodies[index].parent
            if index == candidate:
                return True
        return False

    def _region_density(self, points):
        """Density (g/cm3) and material index at each point: the last body containing it wins."""
        density = np.zeros(points.shape[:-1])
        material = np.zeros(points.shape[:-1], dtype=np.int64)
        for body in self.bodies:
            inside = body.inside(points)
            density[inside] = body.density
            material[inside] = self.materials.index(body.material)
        return density, material

    def voxelise(self, shape_kji, ijk_to_ras, supersample: int = 5):
        """Partial-volume density [k, j, i] (float32) and mass fractions [M, k, j, i] (float32)."""
        ijk_to_ras = np.asarray(ijk_to_ras, dtype=float)
        k, j, i = np.indices(shape_kji, dtype=float)
        centres = np.stack([i, j, k], axis=-1) @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]
        half_diagonal = 0.5 * float(np.sqrt((np.linalg.norm(ijk_to_ras[:3, :3], axis=0) ** 2).sum()))
        n_materials = len(self.materials)
        density, material = self._region_density(centres)
        mass = np.zeros((n_materials, *shape_kji))
        for m in range(n_materials):
            mass[m] = np.where(material == m, density, 0.0)
        near = np.zeros(shape_kji, dtype=bool)
        for body in self.bodies:
            near |= body.near_surface(centres, half_diagonal * 1.01)
        offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
        sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
        sub_ras = sub @ ijk_to_ras[:3, :3].T
        where = np.argwhere(near)
        for chunk in np.array_split(np.arange(len(where)), max(1, len(where) // 4000)):
            idx = where[chunk]
            points = centres[idx[:, 0], idx[:, 1], idx[:, 2]][:, None, :] + sub_ras[None]
            d, m = self._region_density(points)
            for material_index in range(n_materials):
                mass[material_index, idx[:, 0], idx[:, 1], idx[:, 2]] = np.where(m == material_index, d, 0).mean(axis=1)
        total = mass.sum(axis=0)
        fractions = np.where(total > 0, mass / np.where(total > 0, total, 1.0), 0.0)
        fractions[0][total <= 0] = 1.0
        return total.astype(np.float32), fractions.astype(np.float32)

    def exact(self, start, end):
        """Exact line integrals in g/cm2: total, per material (M, ...), and the chord through the union (mm)."""
        end = np.asarray(end, dtype=float)
        start = np.broadcast_to(np.asarray(start, dtype=float), end.shape)
        per_material = np.zeros((len(self.materials), *end.shape[:-1]))
        union = np.zeros(end.shape[:-1])
        for body in self.bodies:
            chord = body.chord_mm(start, end)
            per_material[self.materials.index(body.material)] += chord * body.density
            if body.parent >= 0:
                parent = self.bodies[body.parent]
                per_material[self.materials.index(parent.material)] -= chord * parent.density
            else:
                union += chord
        per_material *= 0.1  # g/cm3 * mm -> g/cm2
        return per_material.sum(axis=0), per_material, union

    def box_filtered(self, start, end, ijk_to_ras, samples: int = 4):
        """Line integrals (total, g/cm2) through the phantom convolved with one voxel box of ``ijk_to_ras``.

        Voxelising with partial volume samples exactly that blurred phantom at the voxel centres, so this is
        what the voxel data themselves permit: the mean of ``exact`` over rays shifted by samples^3 midpoint
        offsets inside one voxel (the convolution commutes with the line integral)."""
        linear = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
        offsets = (np.arange(samples) + 0.5) / samples - 0.5
        grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
        end = np.asarray(end, dtype=float)
        start = np.broadcast_to(np.asarray(start, dtype=float), end.shape)
        total = np.zeros(end.shape[:-1])
        for offset in grid @ linear.T:
            total += self.exact(start + offset, end + offset)[0]
        return total / len(grid)


def torso_phantom(center=(0.0, 0.0, 0.0)) -> SharpPhantom:
    """A torso-like phantom: soft tissue with fat, lung-like and fluid regions, bones of two densities.

    Every body sits well inside its parent (more than a few voxels), so the tree is exact.
    """
    c = np.asarray(center, dtype=float)
    tilt = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    bodies = [
        Body.ellipsoid(c, (68.0, 52.0, 58.0), 40.0, "soft_tissue"),                                   # 0 body
        Body.ellipsoid(c + [-30.0, 8.0, 12.0], (20.0, 17.0, 26.0), -820.0, "air", tilt, parent=0),   # 1 lung
        Body.ellipsoid(c + [28.0, -14.0, -18.0], (16.0, 12.0, 14.0), -100.0, "soft_tissue", parent=0),  # 2 fat
        Body.cylinder(c + [22.0, 16.0, 10.0], (0.15, -0.2, 1.0), 9.0, 30.0, 700.0, "bone", parent=0),  # 3 bone
        Body.ellipsoid(c + [0.0, -34.0, -2.0], (11.0, 8.0, 13.0), 1500.0, "bone", tilt.T, parent=0),  # 4 dense bone
        Body.cylinder(c + [-4.0, 20.0, -30.0], (1.0, 0.3, 0.1), 7.0, 18.0, 10.0, "soft_tissue", parent=0),  # 5 fluid
    ]
    return SharpPhantom(bodies)



_ROTATION = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
    [[1.0, 0.0, 0.0], [0.0, 0.96, -0.28], [0.0, 0.28, 0.96]])


def single_bodies() -> dict:
    """One body per phantom, 20-34 mm semi-axes, on both branches of the density fit."""
    return {
        "ellipsoid 40 HU": SharpPhantom([Body.ellipsoid((1.3, -2.1, 0.7), (30.0, 26.0, 28.0), 40.0, "soft_tissue")]),
        "ellipsoid -100 HU": SharpPhantom([Body.ellipsoid((0.4, 1.2, -0.9), (24.0, 31.0, 27.0), -100.0,
                                                          "soft_tissue", _ROTATION)]),
        "cylinder 700 HU": SharpPhantom([Body.cylinder((-0.7, 0.3, 1.1), (0.3, 0.2, 1.0), 22.0, 34.0, 700.0, "bone")]),
        "cylinder 1200 HU": SharpPhantom([Body.cylinder((0.2, -0.6, 0.4), (1.0, -0.25, 0.3), 18.0, 30.0, 1200.0,
                                                        "bone")]),
    }


def two_material_phantom() -> SharpPhantom:
    """A 700 HU bone cylinder inside a soft-tissue ellipsoid."""
    return SharpPhantom([
        Body.ellipsoid((0.6, -0.4, 0.3), (46.0, 40.0, 44.0), 40.0, "soft_tissue"),
        Body.cylinder((2.0, 1.5, -1.0), (0.25, -0.15, 1.0), 17.0, 30.0, 700.0, "bone", parent=0),
    ])


def two_material_volumes(grid_matrix: np.ndarray, supersample: int = 5):
    """The two-material phantom voxelised on ``grid_matrix`` (centred, 52 mm half extent) as soft fractions and
    as hard (most probable) labels: (soft, hard, matrix, phantom)."""
    from DeepDRRSlicerLib.materials import MaterialVolume

    phantom = two_material_phantom()
    matrix, shape = centred_grid(grid_matrix, 52.0)
    density, fractions = phantom.voxelise(shape, matrix, supersample=supersample)
    soft = MaterialVolume.from_fractions(density, fractions, phantom.materials, matrix)
    hard = MaterialVolume(density=density, labels=np.argmax(fractions, axis=0).astype(np.uint8),
                          names=phantom.materials, ijk_to_ras=matrix)
    return soft, hard, matrix, phantom


def centred_grid(matrix: np.ndarray, half_extent_mm: float):
    """IJK->RAS with the spacing and directions of ``matrix``, centred on the origin, covering
    +-half_extent_mm along each grid axis; returns (matrix, shape [k, j, i])."""
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    shape_ijk = np.ceil(2 * half_extent_mm / spacing).astype(int) + 4
    matrix = np.array(matrix, dtype=float)
    matrix[:3, 3] = 0.0
    matrix[:3, 3] = -(matrix @ np.append((shape_ijk - 1) / 2.0, 1.0))[:3]
    return matrix, tuple(int(n) for n in shape_ijk[::-1])


def test_views(matrix: np.ndarray, pixels: int, spacing_mm: float) -> dict:
    """Two oblique C-arm views and three views exactly along the grid's axes (SID 1020, SOD 530 mm)."""
    views = {f"C-arm {a:+g},{b:+g}": CArm(alpha_deg=a, beta_deg=b, width=pixels, height=pixels,
                                           pixel_spacing_mm=spacing_mm).geometry()
             for a, b in ((25.0, -15.0), (-63.0, 24.0))}
    for axis in range(3):
        beam = matrix[:3, axis] / np.linalg.norm(matrix[:3, axis])
        across = matrix[:3, (axis + 1) % 3] / np.linalg.norm(matrix[:3, (axis + 1) % 3])
        pose = np.eye(4)
        pose[:3, :3] = np.column_stack([across, beam, np.cross(across, beam)])
        views[f"along {'ijk'[axis]}"] = geometry_from_pose(pose, 1020.0, 530.0, pixels, pixels, spacing_mm)
    return views


test_views.__test__ = False   # a helper, not a pytest test

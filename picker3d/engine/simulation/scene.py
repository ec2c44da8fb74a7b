"""A scene: particles placed without overlaps in an ice slab, with membranes, vesicles, crowders and gold; its density, ground truth and occupancy."""
import math

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .species import ATOM_DENSITY, ATOM_SIGMA, random_crowder


def _ball_offsets(radius):
    r = int(math.ceil(radius))
    g = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1].reshape(3, -1).T
    return g[(g ** 2).sum(axis=1) <= radius ** 2]


class _Placer:
    """Rejection sampling of non-overlapping positions inside the ice slab."""

    def __init__(self, shape, slab, rng):
        self.shape = np.array(shape)
        self.slab = slab            # (z_lo, z_hi)
        self.rng = rng
        self.occupied = np.zeros(shape, dtype=bool)
        self._offsets = {}

    def try_place(self, radius, tries=60):
        key = round(radius, 1)
        if key not in self._offsets:
            self._offsets[key] = _ball_offsets(radius)
        off = self._offsets[key]
        r = int(math.ceil(radius))
        lo = np.array([self.slab[0] + r, r, r])
        hi = np.array([self.slab[1] - r, self.shape[1] - 1 - r, self.shape[2] - 1 - r])
        if np.any(hi <= lo):
            return None
        for _ in range(tries):
            c = self.rng.uniform(lo, hi)            # z, y, x
            idx = np.round(c).astype(int) + off
            if not self.occupied[idx[:, 0], idx[:, 1], idx[:, 2]].any():
                self.occupied[idx[:, 0], idx[:, 1], idx[:, 2]] = True
                return c
        return None

    def mark(self, mask):
        self.occupied |= mask


def _splat(shape, points_zyx, weights):
    """Trilinear splatting of weighted points into a zero volume (vectorised, bincount)."""
    grid = np.zeros(int(np.prod(shape)), dtype=np.float64)
    base = np.floor(points_zyx).astype(np.int64)
    frac = points_zyx - base
    dims = np.array(shape)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                idx = base + np.array([dz, dy, dx])
                w = weights.copy()
                w *= frac[:, 0] if dz else 1 - frac[:, 0]
                w *= frac[:, 1] if dy else 1 - frac[:, 1]
                w *= frac[:, 2] if dx else 1 - frac[:, 2]
                ok = np.all((idx >= 0) & (idx < dims), axis=1)
                flat = np.ravel_multi_index(idx[ok].T, shape)
                grid += np.bincount(flat, weights=w[ok], minlength=grid.size)
    return grid.reshape(shape)


def _membrane_density(shape, rng, placer, kind):
    """Lipid bilayer: a vesicle (closed sphere) or a curved patch; two leaflets 4 voxels apart."""
    zlo, zhi = placer.slab
    if kind == "vesicle":
        R = rng.uniform(14, 26)
        c = placer.try_place(R + 3)
        if c is None:
            return None
        sphere_c, radius, cap = c, R, None
    else:  # a patch: a cap of a large sphere, crossing the slab obliquely
        radius = rng.uniform(90, 160)
        normal = rng.normal(size=3)
        normal[0] *= 0.3
        normal /= np.linalg.norm(normal)
        foot = np.array([rng.uniform(zlo + 10, zhi - 10), rng.uniform(0.2, 0.8) * shape[1],
                         rng.uniform(0.2, 0.8) * shape[2]])
        sphere_c, cap = foot - normal * radius, (foot, 38.0)
    rr = int(math.ceil(radius + 4)) if cap is None else int(cap[1] + 4)
    centre = sphere_c if cap is None else cap[0]
    lo = np.maximum(np.floor(centre - rr).astype(int), 0)
    hi = np.minimum(np.ceil(centre + rr).astype(int) + 1, shape)
    zz, yy, xx = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    d = np.sqrt((zz - sphere_c[0]) ** 2 + (yy - sphere_c[1]) ** 2 + (xx - sphere_c[2]) ** 2) - radius
    dens = np.exp(-0.5 * ((d - 2.0) / 0.9) ** 2) + np.exp(-0.5 * ((d + 2.0) / 0.9) ** 2)
    if cap is not None:
        dist_foot = np.sqrt((zz - cap[0][0]) ** 2 + (yy - cap[0][1]) ** 2 + (xx - cap[0][2]) ** 2)
        dens *= 1.0 / (1.0 + np.exp((dist_foot - cap[1]) / 2.0))
        inslab = (zz >= zlo) & (zz <= zhi)
        dens *= inslab
    out = np.zeros(shape, dtype=np.float32)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 0.8 * dens
    if cap is not None:
        placer.mark(ndimage.binary_dilation(out > 0.05, iterations=3))
    return out


def render_scene(shape, species, counts, rng, crowders=0, vesicles=0, membranes=0, gold=0,
                 slab_fraction=0.75, with_particle_density=False):
    """Place particles and distractors; return density, ground-truth rows and instance labels.

    Returns ``(density, rows, occupancy)``: ``rows`` are dicts with x, y, z (voxels),
    class, rot, tilt, psi (ZYZ Euler angles, degrees); ``occupancy`` holds the 1-based
    row index of the ground-truth particle that owns each voxel (0 elsewhere).
    ``with_particle_density=True`` appends the density of the labelled particles alone
    (the signal the noise level is referred to, see ``image_volume``).
    """
    shape = tuple(int(s) for s in shape)
    thickness = shape[0] * slab_fraction
    zc = shape[0] / 2 + rng.uniform(-0.05, 0.05) * shape[0]
    slab = (max(0, int(zc - thickness / 2)), min(shape[0] - 1, int(zc + thickness / 2)))
    placer = _Placer(shape, slab, rng)
    density = np.zeros(shape, dtype=np.float32)
    for kind, n in (("membrane", membranes), ("vesicle", vesicles)):
        for _ in range(n):
            m = _membrane_density(shape, rng, placer, kind)
            if m is not None:
                density += m
    points, weights, owners, rows = _place_objects(species, counts, rng, placer, crowders, gold)
    # labelled particles and distractors are blurred separately (the blur is linear, so
    # their sum is the scene) to keep the particles' own density for the noise reference
    particle_density = np.zeros(shape, dtype=np.float32)
    for is_particle, target in ((True, particle_density), (False, density)):
        sel = [i for i, o in enumerate(owners) if (o > 0) == is_particle]
        if sel:
            pts = np.concatenate([points[i] for i in sel])
            w = np.concatenate([weights[i] for i in sel])
            target += ndimage.gaussian_filter(_splat(shape, pts, w), ATOM_SIGMA).astype(np.float32)
    density += particle_density
    occupancy = _occupancy(shape, points, owners)
    if with_particle_density:
        return density, rows, occupancy, particle_density
    return density, rows, occupancy


def _place_objects(species, counts, rng, placer, crowders, gold):
    """Particles (biggest first, so that they find room), then crowders, then gold beads:
    their points (zyx), weights, owner rows (1-based; 0 for distractors) and the
    ground-truth rows."""
    points, weights, owners, rows = [], [], [], []
    for sp in sorted(species, key=lambda s: -s.radius):
        for _ in range(counts.get(sp.name, 0)):
            c = placer.try_place(sp.radius)
            if c is None:
                continue
            rot = Rotation.random(random_state=rng)
            pts = rot.apply(sp.atoms)[:, ::-1] + c      # xyz -> zyx
            points.append(pts)
            weights.append(np.ones(len(pts)))
            rows.append({"x": c[2], "y": c[1], "z": c[0], "class": sp.name,
                         **dict(zip(("rot", "tilt", "psi"), rot.as_euler("ZYZ", degrees=True)))})
            owners.append(len(rows))
    for _ in range(crowders):
        cr = random_crowder(rng)
        c = placer.try_place(cr.radius)
        if c is not None:
            points.append(Rotation.random(random_state=rng).apply(cr.atoms)[:, ::-1] + c)
            weights.append(np.ones(len(cr.atoms)))
            owners.append(0)
    for _ in range(gold):
        r = rng.uniform(2.0, 3.5)
        c = placer.try_place(r + 1)
        if c is not None:
            pts = _ball_offsets(r).astype(float) + c
            points.append(pts)
            weights.append(np.full(len(pts), 6.0 / ATOM_DENSITY))  # gold scatters ~6x protein
            owners.append(0)
    return points, weights, owners, rows


def _occupancy(shape, points, owners):
    """Voxels within ~1.5 voxel of a particle's atoms, cavities filled (a hollow shell's
    centre belongs to the shell), labelled with the owner row: for the SHREC-style hit test."""
    occupancy = np.zeros(shape, dtype=np.int32)
    ball = ndimage.generate_binary_structure(3, 1)
    for pts, owner in zip(points, owners):
        if owner == 0:
            continue
        idx = np.round(pts).astype(int)
        lo = np.maximum(idx.min(axis=0) - 2, 0)
        hi = np.minimum(idx.max(axis=0) + 3, shape)
        local = np.zeros(hi - lo, dtype=bool)
        keep = np.all((idx >= lo) & (idx < hi), axis=1)
        li = idx[keep] - lo
        local[li[:, 0], li[:, 1], li[:, 2]] = True
        local = ndimage.binary_dilation(local, ball, iterations=1)
        # close open channels (barrel ends, gaps in a shell) before filling the cavity
        closed = ndimage.binary_closing(np.pad(local, 3), ball, iterations=3)[3:-3, 3:-3, 3:-3]
        local = ndimage.binary_fill_holes(closed | local)
        region = occupancy[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        region[local] = owner
    return occupancy

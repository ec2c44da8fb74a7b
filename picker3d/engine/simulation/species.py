"""The simulated species: deterministic clouds of pseudo-atoms (x, y, z in voxels, centred), and random crowders."""
import dataclasses

import numpy as np

from ..errors import InputError

ATOM_SIGMA = 1.0          # voxels; one Gaussian per pseudo-atom (~10 Å blobs)


ATOM_DENSITY = 0.6        # pseudo-atoms per cubic voxel inside a particle's body


def _fill(rng, inside, half_extent):
    """Uniform pseudo-atoms (ATOM_DENSITY per voxel) inside the body ``inside(points)``."""
    half_extent = np.asarray(half_extent, dtype=float)
    n_box = int(float(np.prod(2 * half_extent)) * ATOM_DENSITY)
    pts = rng.uniform(-half_extent, half_extent, size=(n_box, 3))
    return pts[inside(pts)]


def _ellipsoid(c, r):
    c, r = np.asarray(c, float), np.asarray(r, float)
    return lambda p: (((p - c) / r) ** 2).sum(axis=1) <= 1.0


def _union(*preds):
    return lambda p: np.logical_or.reduce([f(p) for f in preds])


def _species_large(rng):
    # asymmetric two-subunit complex (ribosome-like), ~24 voxels across
    body = _union(_ellipsoid((0, 0, -2.2), (9.5, 8.0, 7.2)),
                  _ellipsoid((1.8, 1.4, 5.4), (7.6, 5.8, 4.0)),
                  _ellipsoid((-6.3, 3.6, 4.5), (2.7, 2.7, 3.2)))
    pts = _fill(rng, body, (10, 9, 10))
    # a groove makes it chiral/asymmetric
    groove = ((pts[:, 0] - 2.7) ** 2 + (pts[:, 1] + 1.8) ** 2 < 5.0) & (pts[:, 2] < 1.8)
    return pts[~groove]


def _species_barrel(rng):
    # proteasome-like barrel: 4 stacked rings with a central channel, ~16 long
    def inside(p):
        rr = np.hypot(p[:, 0], p[:, 1])
        ring_gap = (np.abs(np.abs(p[:, 2]) - 2.8) < 0.45)
        return (rr <= 5.0) & (rr >= 1.8) & (np.abs(p[:, 2]) <= 5.6) & ~ring_gap
    return _fill(rng, inside, (5, 5, 6))


def _species_shell(rng):
    # ferritin-like hollow shell, ~12 across
    def inside(p):
        r = np.linalg.norm(p, axis=1)
        return (r <= 4.9) & (r >= 3.0)
    return _fill(rng, inside, (5, 5, 5))


def _species_rod(rng):
    # elongated rod with a knob at one end, ~20 long, ~6 wide
    def inside(p):
        shaft = (np.hypot(p[:, 0], p[:, 1]) <= 2.4) & (np.abs(p[:, 2]) <= 8.5)
        knob = ((p - np.array([0.0, 0.0, 7.0])) ** 2).sum(axis=1) <= 3.6 ** 2
        return shaft | knob
    return _fill(rng, inside, (4, 4, 9))


def _species_tiny(rng):
    # small globular protein, ~7 across
    return _fill(rng, _ellipsoid((0, 0, 0), (2.8, 2.4, 2.1)), (3, 3, 3))


SPECIES_BUILDERS = {
    "large": _species_large,
    "barrel": _species_barrel,
    "shell": _species_shell,
    "rod": _species_rod,
    "tiny": _species_tiny,
}


# Default number of copies per 96x256x256 voxels of slab (scaled with the volume).
DEFAULT_COUNTS = {"large": 12, "barrel": 18, "shell": 22, "rod": 16, "tiny": 36}


@dataclasses.dataclass
class Species:
    name: str
    atoms: np.ndarray          # (n, 3) x, y, z in voxels, centred on the particle centre
    radius: float              # bounding radius in voxels (atoms + blur)

    @property
    def diameter(self):
        """Particle diameter in voxels used for labels and matching."""
        return int(round(2 * self.radius))


def build_species(name, voxel_size=10.0):
    """Deterministic pseudo-atom model of a species, scaled for ``voxel_size`` Å voxels."""
    if name not in SPECIES_BUILDERS:
        raise InputError(f"--species: unknown species '{name}' (known: {', '.join(SPECIES_BUILDERS)})")
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(name))
    atoms = SPECIES_BUILDERS[name](np.random.default_rng(seed)).astype(np.float64)
    atoms -= atoms.mean(axis=0)
    atoms *= 10.0 / float(voxel_size)
    radius = float(np.linalg.norm(atoms, axis=1).max()) + ATOM_SIGMA
    return Species(name, atoms, radius)


def random_crowder(rng, voxel_size=10.0):
    """An unlabelled 'crowder': 2-4 random overlapping blobs, 6-22 voxels across."""
    n_lobes = rng.integers(2, 5)
    size = rng.uniform(3.0, 9.5)
    centres = rng.normal(0, size * 0.35, size=(n_lobes, 3))
    radii = rng.uniform(0.45, 0.9, size=(n_lobes, 3)) * size
    body = _union(*[_ellipsoid(c, r) for c, r in zip(centres, radii)])
    ext = np.abs(centres).max(axis=0) + radii.max(axis=0)
    atoms = _fill(rng, body, ext)
    if len(atoms) < 8:
        atoms = rng.normal(0, 1.5, size=(12, 3))
    atoms -= atoms.mean(axis=0)
    atoms *= 10.0 / float(voxel_size)
    return Species("crowder", atoms, float(np.linalg.norm(atoms, axis=1).max()) + ATOM_SIGMA)

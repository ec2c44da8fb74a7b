"""Simulated cryo-electron tomograms with ground truth (the embedded default dataset).

Real tomograms cannot be downloaded here, so picker3d generates its own test bed.
The imaging recipe follows the one summarised in Gum-Net's supplement (seed 004,
§S3, "simulation recipe"): rigidly placed structures are projected along a
single-axis tilt series, each projection is modulated by the CTF, Gaussian noise is
added to a target SNR and the series is back-projected.

Geometry and conventions
- Volumes are ``data[z, y, x]``; the tilt axis is ``y``; a tilt by ``theta`` projects
  onto the detector axis ``u = x cos(theta) + z sin(theta)`` (centred coordinates).
  The same formula is used by the projector and the back-projector, so the
  reconstruction is not z-mirrored (a wrong tilt sign mirrors it; a test checks this).
- Density is positive protein potential; the CTF (under-focus, Δf > 0) makes the low
  frequencies negative, so particles are dark in the reconstruction, as in real data.
- SNR = var(signal) / var(noise) per projection, where the signal of a tomogram is the
  labelled particles' CTF-modulated projection inside their footprints (a particle box,
  as Gum-Net defines a sub-tomogram's SNR, seed 004 §S3.5.1) and the noise is the same
  for every tilt (constant dose). Gold, membranes and crowders therefore add contrast,
  not noise. (Earlier builds let the whole field's variance per projection set the noise,
  so distractors raised it: SNR 0.05 then gave the particles an SNR of 0.02-0.03.)
  Sub-tomogram stacks use each box's whole variance.

Particles are built deterministically from pseudo-atoms (points splatted into the
grid, then blurred by one Gaussian), orientations are uniform on SO(3), and nothing
overlaps. Unlabelled crowders, membranes, vesicles and gold beads are optional
distractors that are NOT in the ground truth.
"""
import dataclasses
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .errors import InputError

ATOM_SIGMA = 1.0          # voxels; one Gaussian per pseudo-atom (~10 Å blobs)
ATOM_DENSITY = 0.6        # pseudo-atoms per cubic voxel inside a particle's body


# ----------------------------------------------------------------------------------------
# Particle species: each a deterministic cloud of pseudo-atoms (x, y, z in voxels, centred)
# ----------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------
# Placement and rendering of the ground-truth density
# ----------------------------------------------------------------------------------------

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

    all_points, all_weights, owners = [], [], []
    rows = []
    # biggest first, so that they find room
    order = sorted(species, key=lambda s: -s.radius)
    for sp in order:
        for _ in range(counts.get(sp.name, 0)):
            c = placer.try_place(sp.radius)
            if c is None:
                continue
            rot = Rotation.random(random_state=rng)
            pts = rot.apply(sp.atoms)[:, ::-1] + c      # xyz -> zyx
            all_points.append(pts)
            all_weights.append(np.ones(len(pts)))
            rows.append({"x": c[2], "y": c[1], "z": c[0], "class": sp.name,
                         **dict(zip(("rot", "tilt", "psi"), rot.as_euler("ZYZ", degrees=True)))})
            owners.append(len(rows))
    for _ in range(crowders):
        cr = random_crowder(rng)
        c = placer.try_place(cr.radius)
        if c is not None:
            all_points.append(Rotation.random(random_state=rng).apply(cr.atoms)[:, ::-1] + c)
            all_weights.append(np.ones(len(cr.atoms)))
            owners.append(0)
    for _ in range(gold):
        r = rng.uniform(2.0, 3.5)
        c = placer.try_place(r + 1)
        if c is not None:
            pts = _ball_offsets(r).astype(float) + c
            all_points.append(pts)
            all_weights.append(np.full(len(pts), 6.0 / ATOM_DENSITY))  # gold scatters ~6x protein
            owners.append(0)

    # labelled particles and distractors are blurred separately (the blur is linear, so
    # their sum is the scene) to keep the particles' own density for the noise reference
    particle_density = np.zeros(shape, dtype=np.float32)
    for is_particle, target in ((True, particle_density), (False, density)):
        sel = [i for i, o in enumerate(owners) if (o > 0) == is_particle]
        if sel:
            pts = np.concatenate([all_points[i] for i in sel])
            w = np.concatenate([all_weights[i] for i in sel])
            target += ndimage.gaussian_filter(_splat(shape, pts, w), ATOM_SIGMA).astype(np.float32)
    density += particle_density

    # occupancy: voxels within ~1.5 voxel of a particle's atoms, cavities filled (a hollow
    # shell's centre belongs to the shell), for the SHREC-style hit test
    occupancy = np.zeros(shape, dtype=np.int32)
    ball = ndimage.generate_binary_structure(3, 1)
    for pts, owner in zip(all_points, owners):
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
    if with_particle_density:
        return density, rows, occupancy, particle_density
    return density, rows, occupancy


# ----------------------------------------------------------------------------------------
# Imaging: projection, CTF, noise, weighted back-projection (torch, CPU or GPU)
# ----------------------------------------------------------------------------------------

def electron_wavelength(kv):
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = kv * 1e3
    return 12.2643 / math.sqrt(v * (1 + 0.978466e-6 * v))


def ctf_2d(shape, voxel_size, defocus_um, kv=300.0, cs_mm=2.7, amp_contrast=0.07, bfactor=200.0):
    """Phase-contrast CTF (under-focus positive) with a B-factor envelope, on an rfft2 grid."""
    lam = electron_wavelength(kv)
    ky = np.fft.fftfreq(shape[0], d=voxel_size)
    kx = np.fft.rfftfreq(shape[1], d=voxel_size)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    dz = defocus_um * 1e4
    cs = cs_mm * 1e7
    chi = math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam ** 3 * k2 ** 2
    w = math.sqrt(1 - amp_contrast ** 2)
    return -(w * np.sin(chi) + amp_contrast * np.cos(chi)) * np.exp(-bfactor * k2 / 4.0)


def project(volume, angle_deg):
    """Line integrals of ``volume[z, y, x]`` for a tilt about y: returns ``(Y, X)``."""
    Z, Y, X = volume.shape
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)
    T = int(math.ceil(Z / max(abs(c), 1e-3))) + 2
    uc = torch.arange(X, dtype=volume.dtype, device=volume.device) - (X - 1) / 2
    tc = torch.arange(T, dtype=volume.dtype, device=volume.device) - (T - 1) / 2
    xs = uc[None, :] * c - tc[:, None] * s            # (T, U)
    zs = uc[None, :] * s + tc[:, None] * c
    grid = torch.stack((xs / ((X - 1) / 2), zs / ((Z - 1) / 2)), dim=-1)[None]
    vol = volume.permute(1, 0, 2)[None]               # (1, C=Y, H=Z, W=X)
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].sum(dim=1)                          # (Y, U)


def ramp_filter(projection):
    """Ram-Lak filter along the detector axis (built in real space to keep the DC right)."""
    U = projection.shape[-1]
    n = 2 * U
    k = torch.arange(n, device=projection.device)
    k = torch.where(k <= n // 2, k, n - k).to(projection.dtype)
    h = torch.zeros(n, dtype=projection.dtype, device=projection.device)
    h[0] = 0.25
    odd = (k % 2) == 1
    h[odd] = -1.0 / (math.pi * k[odd]) ** 2
    filt = torch.fft.rfft(h).real
    spec = torch.fft.rfft(projection, n=n, dim=-1) * filt
    return torch.fft.irfft(spec, n=n, dim=-1)[..., :U]


def backproject(filtered, angles_deg, shape):
    """Weighted back-projection of filtered projections ``(A, Y, U)`` into ``(Z, Y, X)``."""
    Z, Y, X = shape
    dev, dt = filtered.device, filtered.dtype
    xc = torch.arange(X, dtype=dt, device=dev) - (X - 1) / 2
    zc = torch.arange(Z, dtype=dt, device=dev) - (Z - 1) / 2
    recon = torch.zeros((Y, Z, X), dtype=dt, device=dev)
    U = filtered.shape[-1]
    for proj, a in zip(filtered, angles_deg):
        th = math.radians(a)
        u = xc[None, :] * math.cos(th) + zc[:, None] * math.sin(th) + (U - 1) / 2  # (Z, X)
        i0 = torch.floor(u)
        w = (u - i0)[None]
        i0 = i0.long()
        padded = F.pad(proj, (1, 2))                 # zero beyond the detector
        j0 = (i0 + 1).clamp(0, U + 2).flatten()
        j1 = (i0 + 2).clamp(0, U + 2).flatten()
        v0 = padded[:, j0].reshape(Y, Z, X)
        v1 = padded[:, j1].reshape(Y, Z, X)
        recon += v0 * (1 - w) + v1 * w
    recon *= math.pi / (2 * len(angles_deg))
    return recon.permute(1, 0, 2).contiguous()


def tilt_angles(tilt_range=60.0, tilt_step=3.0):
    n = int(round(2 * tilt_range / tilt_step)) + 1
    return np.linspace(-tilt_range, tilt_range, n)


def particle_signal_variance(particle_density, voxel_size, angles, defocus_um, bfactor=200.0,
                             device="cpu"):
    """Variance of the CTF-modulated projections of the labelled particles, inside their
    footprints (pixels crossing at least one voxel of protein), averaged over the tilts.

    This is the signal of a particle box as Gum-Net defines a sub-tomogram's SNR (seed 004
    §S3.5.1): it does not grow with gold, membranes or crowders and hardly depends on how
    many particles a field holds, so a given SNR means the same particle visibility in
    every scene. 0 when there are no particles.
    """
    vol = torch.as_tensor(np.ascontiguousarray(particle_density), dtype=torch.float32, device=device)
    _, Y, X = vol.shape
    ctf = torch.as_tensor(ctf_2d((Y, X), voxel_size, defocus_um, bfactor=bfactor),
                          dtype=torch.float32, device=device)
    variances = []
    for a in angles:
        p = project(vol, a)
        footprint = p > ATOM_DENSITY
        if int(footprint.sum()) < 2:
            continue
        img = torch.fft.irfft2(torch.fft.rfft2(p) * ctf, s=(Y, X))
        variances.append(float(img[footprint].var()))
    return float(np.mean(variances)) if variances else 0.0


def image_volume(density, voxel_size, rng, snr=0.05, tilt_range=60.0, tilt_step=3.0,
                 defocus_um=None, bfactor=200.0, device="cpu", batch_boxes=None,
                 particle_density=None):
    """Tilt series with CTF and noise, then weighted back-projection.

    ``density`` is positive potential ``[z, y, x]``. With ``batch_boxes=b``, the y axis
    holds independent boxes of height ``b`` (sub-tomogram mode): the CTF is applied to
    each box separately so that boxes do not leak into each other, and each projection's
    noise follows the mean variance of its boxes.
    With ``particle_density`` (tomogram mode), the noise is the same for every tilt (a
    constant dose) and its variance is the labelled particles' signal variance
    (``particle_signal_variance``) divided by ``snr``. Without it (or when it holds no
    particle), each projection's noise follows that projection's whole-field variance.
    Returns the reconstruction, normalised to zero mean and unit variance.
    ``snr=None`` or ``inf`` gives a noise-free reconstruction.
    """
    vol = torch.as_tensor(np.ascontiguousarray(density), dtype=torch.float32, device=device)
    Z, Y, X = vol.shape
    angles = tilt_angles(tilt_range, tilt_step)
    if defocus_um is None:
        defocus_um = rng.uniform(2.0, 5.0)
    noisy = snr is not None and np.isfinite(snr)
    fixed_sigma = None
    if noisy and particle_density is not None:
        ref = particle_signal_variance(particle_density, voxel_size, angles, defocus_um,
                                       bfactor=bfactor, device=device)
        # a scene without labelled particles has no signal to refer to: the whole-field
        # rule below applies to it
        if ref > 0:
            fixed_sigma = math.sqrt(ref / snr)
    filtered = []
    box = batch_boxes or Y
    for a in angles:
        p = project(vol, a)                                   # (Y, U)
        df = defocus_um + rng.normal(0, 0.05)
        ctf = torch.as_tensor(ctf_2d((box, X), voxel_size, df, bfactor=bfactor),
                              dtype=torch.float32, device=device)
        pb = p.reshape(Y // box, box, X)
        img = torch.fft.irfft2(torch.fft.rfft2(pb) * ctf, s=(box, X)).reshape(Y, X)
        if noisy:
            if fixed_sigma is not None:
                sigma = fixed_sigma
            elif batch_boxes:
                sigma = float(torch.sqrt(img.reshape(Y // box, -1).var(dim=1).mean() / snr))
            else:
                sigma = float(torch.sqrt(img.var() / snr))
            noise = torch.as_tensor(rng.normal(0, sigma, size=(Y, X)), dtype=torch.float32, device=device)
            img = img + noise
        filtered.append(ramp_filter(img))
    recon = backproject(torch.stack(filtered), angles, (Z, Y, X))
    recon = recon - recon.mean()
    recon = recon / (recon.std() + 1e-12)
    return recon.cpu().numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------

def simulate_tomogram(shape=(96, 256, 256), seed=0, snr=0.05, species=None, voxel_size=10.0,
                      tilt_range=60.0, tilt_step=3.0, counts=None, crowders=None, vesicles=1,
                      membranes=1, gold=4, density_scale=1.0, device="cpu"):
    """Simulate one tomogram; returns a dict with tomogram, density, rows, occupancy, manifest."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    names = list(species or SPECIES_BUILDERS)
    sp = [build_species(n, voxel_size) for n in names]
    vol_scale = np.prod(shape) / (96 * 256 * 256) * density_scale
    if counts is None:
        counts = {n: max(1, int(round(DEFAULT_COUNTS.get(n, 15) * vol_scale))) for n in names}
    if crowders is None:
        crowders = int(round(50 * vol_scale))
    density, rows, occupancy, particles = render_scene(
        shape, sp, counts, rng, crowders=crowders, vesicles=vesicles, membranes=membranes,
        gold=gold, with_particle_density=True)
    tomo = image_volume(density, voxel_size, rng, snr=snr, tilt_range=tilt_range,
                        tilt_step=tilt_step, device=device, particle_density=particles)
    manifest = {
        "seed": seed, "shape_zyx": list(shape), "voxel_size_A": voxel_size, "snr": snr,
        "tilt_range_deg": tilt_range, "tilt_step_deg": tilt_step,
        "species": {s.name: {"diameter_vox": s.diameter,
                             "count": sum(r["class"] == s.name for r in rows)} for s in sp},
        "distractors": {"crowders": crowders, "vesicles": vesicles, "membranes": membranes, "gold": gold},
        "seconds": round(time.time() - t0, 2),
    }
    return {"tomogram": tomo, "density": density, "rows": rows, "occupancy": occupancy,
            "manifest": manifest}


def simulate_subtomograms(n_per_species=50, box=32, seed=0, snr=0.03, species=None,
                          voxel_size=10.0, tilt_range=60.0, tilt_step=3.0, max_shift=2.0,
                          device="cpu", chunk=64):
    """Labelled sub-tomograms (one particle per box, random orientation and small shift).

    Returns ``(stack[n, box, box, box], rows)``. The boxes are imaged in chunks stacked
    along y (the tilt axis), which keeps them independent and costs one tilt series
    per chunk.
    """
    rng = np.random.default_rng(seed)
    names = list(species or SPECIES_BUILDERS)
    sp = {n: build_species(n, voxel_size) for n in names}
    labels = [n for n in names for _ in range(n_per_species)]
    order = rng.permutation(len(labels))
    labels = [labels[i] for i in order]
    rows, boxes = [], []
    ctr = (box - 1) / 2
    for start in range(0, len(labels), chunk):
        part = labels[start:start + chunk]
        pts_all, w_all = [], []
        for j, name in enumerate(part):
            rot = Rotation.random(random_state=rng)
            shift = rng.uniform(-max_shift, max_shift, size=3)
            pts = rot.apply(sp[name].atoms)[:, ::-1] + ctr + shift[::-1]
            pts[:, 1] += j * box
            pts_all.append(pts)
            w_all.append(np.ones(len(pts)))
            rows.append({"index": len(rows), "class": name,
                         **dict(zip(("rot", "tilt", "psi"), rot.as_euler("ZYZ", degrees=True))),
                         "dx": shift[0], "dy": shift[1], "dz": shift[2]})
        shape = (box, box * len(part), box)
        dens = ndimage.gaussian_filter(_splat(shape, np.concatenate(pts_all), np.concatenate(w_all)),
                                       ATOM_SIGMA).astype(np.float32)
        rec = image_volume(dens, voxel_size, rng, snr=snr, tilt_range=tilt_range,
                           tilt_step=tilt_step, device=device, batch_boxes=box)
        rec = rec.reshape(box, len(part), box, box).transpose(1, 0, 2, 3)
        boxes.append(rec)
    stack = np.concatenate(boxes)
    # per-box normalisation, as extraction would do
    stack = (stack - stack.mean(axis=(1, 2, 3), keepdims=True)) / (
        stack.std(axis=(1, 2, 3), keepdims=True) + 1e-6)
    return stack.astype(np.float32), rows


def write_simulation(out_dir, n_tomograms=1, seed=0, **kw):
    """Write ``tomo_XX.mrc`` + ``tomo_XX.tsv`` (+ occupancy, density) and ``manifest.json``.

    Tomogram ``i`` uses seed ``seed + i``. Returns the manifest dict.
    """
    from .coords import write_table, CoordTable
    from .fileio import atomic_write
    from .mrcio import write_volume
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"tomograms": []}
    for i in range(n_tomograms):
        stem = f"tomo_{i:02d}"
        sim = simulate_tomogram(seed=seed + i, **kw)
        vs = sim["manifest"]["voxel_size_A"]
        write_volume(os.path.join(out_dir, stem + ".mrc"), sim["tomogram"], vs)
        write_volume(os.path.join(out_dir, stem + "_occupancy.mrc"), sim["occupancy"], vs)
        write_volume(os.path.join(out_dir, stem + "_density.mrc"), sim["density"], vs)
        write_table(os.path.join(out_dir, stem + ".tsv"), CoordTable.from_rows(sim["rows"]))
        entry = dict(sim["manifest"], name=stem, tomogram=stem + ".mrc", coords=stem + ".tsv",
                     occupancy=stem + "_occupancy.mrc", density=stem + "_density.mrc")
        manifest["tomograms"].append(entry)
    first = manifest["tomograms"][0]
    manifest["diameters"] = {k: v["diameter_vox"] for k, v in first["species"].items()}
    manifest["voxel_size_A"] = first["voxel_size_A"]
    with atomic_write(os.path.join(out_dir, "manifest.json")) as tmp, open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
    return manifest

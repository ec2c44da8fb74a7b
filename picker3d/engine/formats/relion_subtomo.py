"""Aligned sub-tomograms as RELION sees them: picker3d's alignment in RELION's angle and
origin convention, and the ``particles.star`` (RELION 3.1 sub-tomogram format) that
``relion_reconstruct --3d_rot`` and ``relion_refine`` read.

picker3d's alignment (:mod:`picker3d.engine.classification.alignment`) says that a member is
the class average rotated by ``R`` about the box centre ``c = (b - 1) / 2`` and shifted by
``t``: ``member(x) = average(R^-1 (x - c - t))``, ``R`` given as intrinsic ZYZ angles
``rot tilt psi``. RELION rotates about the voxel ``b // 2`` (the picked voxel of a box
picker3d cut) and states the opposite direction: its angles are those of ``R^-1`` (same
intrinsic ZYZ order) and its origin is where the particle's centre is *not*: the particle
sits at ``b // 2 - origin``. Moving the rotation centre by ``d = b // 2 - (b - 1) / 2``
(half a voxel in each axis for even boxes) adds ``(R - I) d`` to the shift. Checked with
RELION 3.1.3's ``relion_reconstruct --3d_rot`` (tests/test_relion_binary.py): boxes made
with known rotations and shifts reconstruct the reference at correlation 0.998.

Also the same transform as a Scipion matrix (tomo plugin convention: ``f'(r) = f(M r)``,
``M`` acting on positions about the box centre ``b // 2``): ``M = [R^-1 | -R^-1 s]``.
"""
import os

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write

ALIGNMENT_COLUMNS = ("rot", "tilt", "psi", "shift_x", "shift_y", "shift_z")


def _rotations(euler_deg):
    from scipy.spatial.transform import Rotation
    return Rotation.from_euler("ZYZ", np.asarray(euler_deg, np.float64).reshape(-1, 3), degrees=True)


def centred_shifts(euler_deg, shifts, box):
    """picker3d's shifts ``t`` (n, 3; xyz voxels, rotation about ``(b - 1) / 2``) as shifts
    ``s`` about the voxel ``b // 2``: ``s = t + (R - I) d``."""
    d = np.full(3, box // 2 - (box - 1) / 2.0)
    rot = _rotations(euler_deg)
    return np.asarray(shifts, np.float64).reshape(-1, 3) + rot.apply(d) - d


def relion_angles_origins(euler_deg, shifts, box):
    """``(angles (n, 3) rot tilt psi in degrees, origins (n, 3) xyz in voxels)`` in RELION's
    convention for picker3d's alignment ``euler_deg`` / ``shifts`` of boxes of side ``box``."""
    angles = _rotations(euler_deg).inv().as_euler("ZYZ", degrees=True)
    return angles, -centred_shifts(euler_deg, shifts, box)


def scipion_matrices(euler_deg, shifts, box):
    """4x4 matrices in the tomo plugin's convention (``subtomogram(r) = average(M r)``, about
    the box centre ``b // 2``) for picker3d's alignment."""
    inv = _rotations(euler_deg).inv()
    s = centred_shifts(euler_deg, shifts, box)
    out = np.tile(np.eye(4), (len(s), 1, 1))
    out[:, :3, :3] = inv.as_matrix()
    out[:, :3, 3] = -inv.apply(s)
    return out


def write_wedge_volume(path, box, tilt_range, voxel_size):
    """The missing-wedge weight of a single-axis tilt series about y (1 measured, 0 missing)
    as a ``box``³ volume with the zero frequency at ``b // 2``: RELION's 3-D CTF image."""
    from ..classification.alignment import wedge_mask
    from .mrc import write_volume
    return write_volume(path, np.fft.fftshift(wedge_mask(box, tilt_range)).astype(np.float32), voxel_size)


def write_particles_star(path, table, box, voxel_size, tilt_range=60.0, ctf_name="wedge.mrc"):
    """Write ``path`` (``DIR/particles.star``) for the boxes a classify run wrote to ``DIR``.

    ``table`` is classify's output table: ``box_file`` (names relative to ``DIR``),
    ``cluster``, and where aligned ``rot tilt psi shift_x shift_y shift_z``; positions ``x y
    z`` and ``tomogram`` give ``rlnCoordinateX/Y/Z`` (the box's centre voxel) and
    ``rlnMicrographName``. One optics group with ``rlnImageDimensionality 3``; the
    missing-wedge weight volume ``DIR/wedge.mrc`` is every particle's ``rlnCtfImage``;
    ``rlnRandomSubset`` alternates 1, 2 within each class. Unaligned members (a class of one)
    get zero angles and origins."""
    import pandas as pd
    import starfile
    if "box_file" not in table.extra or "cluster" not in table.extra:
        raise InputError(f"{path}: the table has no box_file / cluster columns (classify with --boxes-dir)")
    if not voxel_size or voxel_size <= 0:
        raise InputError(f"{path}: RELION needs a positive pixel size (the tomograms' header has {voxel_size})")
    folder = os.path.dirname(os.path.abspath(path))
    n = len(table)
    euler, shifts = np.zeros((n, 3)), np.zeros((n, 3))
    if all(c in table.extra for c in ALIGNMENT_COLUMNS):
        euler = np.stack([np.asarray(table.extra[c], float) for c in ALIGNMENT_COLUMNS[:3]], 1)
        shifts = np.stack([np.asarray(table.extra[c], float) for c in ALIGNMENT_COLUMNS[3:]], 1)
        bad = ~np.all(np.isfinite(np.hstack([euler, shifts])), axis=1)
        euler[bad], shifts[bad] = 0.0, 0.0
    angles, origins = relion_angles_origins(euler, shifts, box)
    classes = np.asarray(table.extra["cluster"]).astype(int)
    subset = np.zeros(n, int)
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        subset[members] = np.arange(len(members)) % 2 + 1
    write_wedge_volume(os.path.join(folder, ctf_name), box, tilt_range, voxel_size)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImagePixelSize": [float(voxel_size)], "rlnImageSize": [int(box)],
                           "rlnImageDimensionality": [3], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    tomos = table.extra.get("tomogram", np.asarray(["tomogram"] * n, dtype=object))
    parts = pd.DataFrame({
        "rlnMicrographName": [str(t) for t in tomos],
        "rlnCoordinateX": np.rint(table.xyz[:, 0]), "rlnCoordinateY": np.rint(table.xyz[:, 1]),
        "rlnCoordinateZ": np.rint(table.xyz[:, 2]),
        "rlnImageName": [str(f) for f in table.extra["box_file"]],
        "rlnCtfImage": [ctf_name] * n, "rlnOpticsGroup": np.ones(n, int),
        "rlnAngleRot": np.round(angles[:, 0], 4), "rlnAngleTilt": np.round(angles[:, 1], 4),
        "rlnAnglePsi": np.round(angles[:, 2], 4),
        "rlnOriginXAngst": np.round(origins[:, 0] * voxel_size, 4),
        "rlnOriginYAngst": np.round(origins[:, 1] * voxel_size, 4),
        "rlnOriginZAngst": np.round(origins[:, 2] * voxel_size, 4),
        "rlnClassNumber": classes, "rlnRandomSubset": subset})
    with atomic_write(path, ".star") as tmp:
        starfile.write({"optics": optics, "particles": parts}, tmp, overwrite=True)
    return path


def read_particles_alignment(path):
    """``(image names, classes, angles (n, 3), origins in voxels (n, 3), pixel size)`` of a
    particles.star written by :func:`write_particles_star` (or RELION 3.1)."""
    import starfile
    data = starfile.read(path, always_dict=True)
    if "particles" not in data or "optics" not in data:
        raise InputError(f"{path}: not a RELION 3.1 particles STAR file (needs data_optics and data_particles)")
    p, apix = data["particles"], float(data["optics"]["rlnImagePixelSize"].iloc[0])
    angles = p[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float)
    origins = p[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy(float) / apix
    return p["rlnImageName"].tolist(), p["rlnClassNumber"].to_numpy(int), angles, origins, apix

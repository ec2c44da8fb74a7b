"""Class averages: rotation search, wedge mask, wedge-weighted averaging, FSC."""
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from picker3d.engine.classification.alignment import (
    align_class,
    fsc,
    local_rotations,
    resolution,
    rotation_grid,
    search_global,
    search_local,
    transform_volumes,
    wedge_mask,
)
from picker3d.engine.simulation.dataset import simulate_subtomograms
from picker3d.engine.simulation.scene import _splat
from picker3d.engine.simulation.species import ATOM_SIGMA, build_species


def _density(name, box, voxel_size):
    sp = build_species(name, voxel_size)
    c = (box - 1) / 2
    return ndimage.gaussian_filter(_splat((box,) * 3, sp.atoms[:, ::-1] + c, np.ones(len(sp.atoms))),
                                   ATOM_SIGMA).astype(np.float32)


def _angle(a, b):
    return float(np.degrees((a * b.inv()).magnitude()))


def test_rotation_grid_covers_so3_at_its_step():
    grid = rotation_grid(30)
    assert 400 < len(grid) < 800
    rng = np.random.default_rng(0)
    probes = Rotation.random(200, random_state=rng)
    nearest = [min(np.degrees((grid * p.inv()).magnitude())) for p in probes]
    assert max(nearest) <= 30.0, max(nearest)
    local = local_rotations(probes[0], 10, 1)
    assert len(local) == 27 and _angle(local[0], probes[0]) < 1e-6


def test_a_volume_moves_as_the_convention_says():
    """member(x) = reference(R^-1 (x - c - t)): a point at offset p from the centre goes to R p + t."""
    box = 24
    vol = np.zeros((box,) * 3, np.float32)
    c = (box - 1) / 2
    p = np.array([5.0, 0.0, 0.0])                  # xyz offset of the bright voxel
    vol[int(c + p[2] + 0.5), int(c + p[1] + 0.5), int(c + p[0] + 0.5)] = 1
    vol = ndimage.gaussian_filter(vol, 1.0)
    R = Rotation.from_euler("ZYZ", [90, 0, 0], degrees=True)
    t = np.array([1.0, 2.0, -1.0])
    moved = transform_volumes(vol, R.as_matrix()[None], t[None])[0]
    zyx = np.unravel_index(np.argmax(moved), moved.shape)
    got = np.array(zyx[::-1]) - c
    np.testing.assert_allclose(got, R.apply(p) + t, atol=1.0)


def test_a_known_rotation_is_recovered_within_one_angular_step():
    box, step = 24, 30.0
    ref = _density("large", box, 14.0)
    rng = np.random.default_rng(3)
    truth = Rotation.random(3, random_state=rng)
    shifts = np.array([[1.0, -2.0, 0.0], [0.0, 1.0, 2.0], [-1.0, 0.0, -1.0]])
    wedge = wedge_mask(box, 60)
    members = transform_volumes(ref, truth.as_matrix(), shifts)
    # each member measured through the missing wedge, with noise
    members = np.real(np.fft.ifftn(np.fft.fftn(members, axes=(1, 2, 3)) * wedge, axes=(1, 2, 3))).astype(np.float32)
    members += rng.normal(0, 0.3 * members.std(), members.shape).astype(np.float32)
    grid = rotation_grid(step)
    rot, shift, score = search_global(members, ref, grid, wedge, 3)
    for i in range(3):
        assert _angle(grid[int(rot[i])], truth[i]) <= step, (i, _angle(grid[int(rot[i])], truth[i]))
        np.testing.assert_allclose(shift[i], shifts[i], atol=1.0)
    # the local search refines it below the coarse step
    local = np.stack([local_rotations(grid[int(r)], step / 3, 1).as_matrix() for r in rot])
    pick, shift2, score2 = search_local(members, ref, local, wedge, 3)
    for i in range(3):
        assert _angle(Rotation.from_matrix(local[i, pick[i]]), truth[i]) <= step / 2
    assert np.all(score2 >= score - 1e-4)


def test_fsc_of_identical_halves_is_one_at_every_shell_and_of_noise_near_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(24, 24, 24))
    np.testing.assert_allclose(fsc(a, a), 1.0, atol=1e-9)
    curve = fsc(a, rng.normal(size=a.shape))
    assert np.abs(curve[2:]).max() < 0.3
    assert resolution(fsc(a, a), 24, 10.0, 0.143) == pytest.approx(20.0)       # Nyquist: 2 voxels


def test_wedge_mask_removes_the_missing_wedge_only():
    w = wedge_mask(32, 60)
    assert w[0, 0, 5] == 1 and w[5, 0, 0] == 0          # along x measured, along z (the beam) missing
    missing = 1 - w.mean()
    assert 0.25 < missing < 0.4                          # a +-60 degree series misses a third
    assert wedge_mask(16, 90).min() == 1


def test_reference_free_alignment_recovers_the_members_rotations():
    """Thirty simulated sub-tomograms of one asymmetric species (random orientations and
    shifts, CTF, +-60 degree tilts, SNR 0.1): their rotations agree with the truth up to one
    common rotation (the average's own frame)."""
    stack, rows = simulate_subtomograms(30, box=24, seed=2, snr=0.1, species=["large"], voxel_size=14.0)
    res = align_class(stack, tilt_range=60, voxel_size=14.0, coarse_iterations=2, fine_iterations=1, seed=0)
    truth = Rotation.from_euler("ZYZ", [[r["rot"], r["tilt"], r["psi"]] for r in rows], degrees=True)
    common = truth.inv() * Rotation.from_matrix(res["matrices"])
    spread = np.degrees((common * common.mean().inv()).magnitude())
    assert np.median(spread) < 15, np.sort(spread)
    assert res["fsc"][1] > 0.5 and res["resolution_0143"] < 14.0 * 24 / 3      # beyond the third shell
    assert res["euler"].shape == (30, 3) and res["shifts"].shape == (30, 3)

"""Clustering-based classification (the DISCA engine)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from picker3d.engine.classification.boxes import (
    bin_boxes,
    box_contrast,
    class_averages,
    extract_subvolumes,
    normalize_box,
)
from picker3d.engine.classification.disca import disca, disca_on_boxes
from picker3d.engine.classification.mixture import align_labels, clustering_scores, ddbi, fit_gmm_bic, split_by_density
from picker3d.engine.classification.yopo import YOPO, extract_features, rotate_boxes


def _blob(box, centre, rng):
    """A random lumpy object (sum of Gaussians) centred at ``centre`` (z, y, x) in a zero box."""
    zz, yy, xx = np.mgrid[:box, :box, :box].astype(np.float32)
    vol = np.zeros((box,) * 3, np.float32)
    for _ in range(6):
        c = np.asarray(centre) + rng.uniform(-2, 2, 3)
        vol += np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / 4.0)
    return vol


def test_features_of_a_shifted_copy_are_identical():
    """Global max-pool after valid convolutions: a translated object gives the same features."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = YOPO(3).eval()
    a = _blob(28, (12, 13, 12), rng)
    b = np.roll(a, (3, -2, 2), axis=(0, 1, 2))      # the object stays clear of the borders
    fa, fb = extract_features(model, np.stack([a, b]))
    assert np.abs(fa).max() > 0
    np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-6)
    # ... while a different object does not
    c = _blob(28, (12, 13, 12), np.random.default_rng(5))
    fc = extract_features(model, c[None])[0]
    assert np.abs(fa - fc).max() > 1e-3


def test_bic_picks_three_well_separated_blobs():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0, 0, 0], [8, 0, 0, 0], [0, 8, 0, 0]], float)
    Z = np.concatenate([c + rng.standard_normal((80, 4)) for c in centres])
    best, bics = fit_gmm_bic(Z, range(1, 7), seed=0)
    assert best.n_components == 3, bics
    assert min(bics, key=bics.get) == 3


def test_align_labels_undoes_a_permutation():
    prev = np.repeat([0, 1, 2], 10)
    new = np.repeat([2, 0, 1], 10)   # same clusters, other numbers
    np.testing.assert_array_equal(align_labels(new, prev), prev)
    # a new cluster is numbered after the matched ones
    new2 = new.copy()
    new2[:3] = 7
    out = align_labels(new2, prev)
    assert set(out[:3]) == {3} and np.array_equal(out[3:], prev[3:])


def test_ddbi_prefers_tight_separated_clusters():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 100)
    far = np.concatenate([rng.standard_normal((100, 3)), 10 + rng.standard_normal((100, 3))])
    near = np.concatenate([rng.standard_normal((100, 3)), 1 + rng.standard_normal((100, 3))])
    assert ddbi(far, labels) < 0.5 * ddbi(near, labels)
    assert ddbi(far, np.zeros(200, int)) == float("inf")


def test_extract_subvolumes_positions_padding_and_skip():
    rng = np.random.default_rng(3)
    vol = rng.standard_normal((30, 40, 50)).astype(np.float32)
    xyz = np.array([[20.0, 15.0, 12.0], [1.0, 2.0, 3.0]])     # the second reaches outside
    stack, kept, outside = extract_subvolumes(vol, xyz, 8)
    assert stack.shape == (2, 8, 8, 8) and outside == 1 and list(kept) == [0, 1]
    ref = vol[12 - 4:12 + 4, 15 - 4:15 + 4, 20 - 4:20 + 4]
    np.testing.assert_allclose(stack[0], normalize_box(ref[None])[0], atol=1e-4)
    # the padded part mirrors the tomogram at its edge: x = -3 .. 4 reads 2 1 0 0 1 2 3 4
    raw, _, _ = extract_subvolumes(vol, xyz, 8, per_box=False)
    v = (vol - vol.mean()) / vol.std()
    np.testing.assert_allclose(raw[1][4, 4, :], v[3, 2, [2, 1, 0, 0, 1, 2, 3, 4]], atol=2e-3)
    stack, kept, outside = extract_subvolumes(vol, xyz, 8, out_of_volume="skip")
    assert len(stack) == 1 and list(kept) == [0] and outside == 1
    assert bin_boxes(np.ones((2, 8, 8, 8)), 2).shape == (2, 4, 4, 4)


def test_rotated_copies_keep_statistics_and_fill_corners_with_noise():
    rng = np.random.default_rng(4)
    x = torch.zeros(4, 1, 16, 16, 16)
    out = rotate_boxes(x, rng)
    # a zero box rotated is zero inside and N(0,1) in the empty corners
    assert 0.05 < float((out != 0).float().mean()) < 0.8
    ones = rotate_boxes(torch.ones(2, 1, 16, 16, 16), rng)
    assert abs(float(ones[:, :, 8, 8, 8].mean()) - 1.0) < 1e-4


def _two_shapes(n=30, box=20, seed=0):
    """A compact ball and a long rod, noisy, random orientation and shift."""
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(seed)
    zz, yy, xx = (np.mgrid[:box, :box, :box] - (box - 1) / 2).astype(np.float32)
    pts = np.stack([zz, yy, xx], -1)
    stack, truth = [], []
    for i in range(2 * n):
        kind = i % 2
        r = Rotation.random(random_state=rng).as_matrix().astype(np.float32)
        p = pts @ r.T - rng.uniform(-1.5, 1.5, 3).astype(np.float32)
        if kind == 0:
            v = (np.linalg.norm(p, axis=-1) < 5).astype(np.float32)
        else:
            v = ((np.abs(p[..., 0]) < 8) & (np.hypot(p[..., 1], p[..., 2]) < 2)).astype(np.float32)
        stack.append(v + 0.5 * rng.standard_normal(v.shape).astype(np.float32))
        truth.append(kind)
    return normalize_box(np.stack(stack)), np.array(truth)


def test_disca_separates_two_very_different_shapes():
    stack, truth = _two_shapes()
    res = disca(stack, k_range=range(2, 6), iterations=3, seed=0, log=lambda m: None)
    s = clustering_scores(truth, res["labels"])
    assert s["homogeneity"] >= 0.9, s
    assert res["k"] <= 3
    assert res["posterior"].shape == (len(stack),) and np.all(res["posterior"] <= 1.0 + 1e-9)
    assert len(res["history"]) >= 1 and all("ddbi" in h for h in res["history"])
    avg = class_averages(stack, res["labels"])
    assert avg.shape == (res["k"],) + stack.shape[1:]


def test_contrast_separates_the_same_shape_at_two_densities():
    """Per-box normalisation makes a faint and a strong copy of one shape look alike (junk
    such as gold is a strong version of a blob); the box-contrast features tell them apart."""
    rng = np.random.default_rng(3)
    box, n = 20, 30
    raw, truth = [], []
    for i in range(2 * n):
        amp = 1.0 if i % 2 == 0 else 4.0
        raw.append(amp * _blob(box, (box / 2,) * 3, rng) + 0.002 * rng.standard_normal((box,) * 3).astype(np.float32))
        truth.append(i % 2)
    raw, truth = np.stack(raw), np.array(truth)
    c = box_contrast(raw)
    assert c.shape == (2 * n, 2)
    assert c[truth == 1, 0].min() > c[truth == 0, 0].max()      # log std ranks the densities
    # nearly noise-free boxes: beyond two PCA components the whitening would blow up the
    # blobs' shape jitter to the amplitude's weight
    with_contrast = disca_on_boxes(raw, bin=1, contrast_weight=3.0, k_range=range(2, 4), iterations=2, seed=0, pca_dim=2,
                                   log=lambda m: None)
    without = disca(normalize_box(raw), k_range=range(2, 4), iterations=2, seed=0, log=lambda m: None)
    assert clustering_scores(truth, with_contrast["labels"])["homogeneity"] >= 0.95
    assert clustering_scores(truth, without["labels"])["homogeneity"] < 0.5


def test_centre_mass_tells_empty_boxes_from_particles():
    """A picked particle puts density at the box centre; an empty-ice pick does not. The
    second contrast feature (centre minus rim) must rank every particle box above every
    empty one in a noisy stack, whatever the boxes' overall brightness."""
    rng = np.random.default_rng(4)
    box, n = 24, 20
    boxes, truth = [], []
    for i in range(2 * n):
        noise = 0.3 * rng.standard_normal((box,) * 3).astype(np.float32) + rng.uniform(-0.5, 0.5)
        boxes.append(noise + (_blob(box, (box / 2,) * 3, rng) if i % 2 == 0 else 0.0))
        truth.append(i % 2 == 0)
    c = box_contrast(np.stack(boxes))
    truth = np.array(truth)
    assert c[truth, 1].min() > c[~truth, 1].max()


def test_split_by_density_takes_empty_picks_out_of_a_particle_class():
    """Class 0 holds 40 particles (centre density about -1) and 30 empty picks (about 0);
    class 1 holds one species whose density is unimodal. Only class 0 is split, the empty
    picks exactly form the new class, and a separation of 0 switches the split off."""
    rng = np.random.default_rng(5)
    density = np.r_[rng.normal(-1.0, 0.15, 40), rng.normal(0.05, 0.15, 30), rng.normal(-0.6, 0.15, 50)]
    labels = np.r_[np.zeros(70, int), np.ones(50, int)]
    posterior = np.full(120, 0.9)
    new, post, splits = split_by_density(labels, density, posterior, log=lambda m: None)
    assert [s[:3] for s in splits] == [(0, 2, [40, 30])] and splits[0][3] > 3.0
    assert np.all(new[:40] == 0) and np.all(new[40:70] == 2) and np.all(new[70:] == 1)
    assert post.shape == (120,) and np.all(post <= 0.9) and np.all(post[70:] == 0.9)
    assert np.array_equal(labels, np.r_[np.zeros(70, int), np.ones(50, int)])    # input untouched
    same, _, none = split_by_density(labels, density, posterior, min_separation=0, log=lambda m: None)
    assert none == [] and np.array_equal(same, labels)
    # two groups that overlap (D about 1.3) are one class with a spread, not two
    close = np.r_[rng.normal(-0.2, 0.15, 40), rng.normal(0.0, 0.15, 30)]
    _, _, none = split_by_density(np.zeros(70, int), close, log=lambda m: None)
    assert none == []


def test_disca_refuses_too_few_particles():
    from picker3d.engine.errors import InputError
    with pytest.raises(InputError, match="too few"):
        disca(np.zeros((2, 16, 16, 16), np.float32), k_range=range(2, 5), log=lambda m: None)


def test_cli_classify_writes_table_averages_and_history(tmp_path):
    from picker3d.engine.formats.mrc import read_volume, write_volume
    from picker3d.engine.formats.readers import read_table
    from picker3d.engine.formats.table import CoordTable
    from picker3d.engine.formats.writers import write_table
    stack, truth = _two_shapes(n=20, box=20, seed=1)
    # paste the boxes into a tomogram and classify from coordinates
    tomo = np.zeros((20, 20 * 8, 20 * 5), np.float32)
    xyz = []
    for i, box in enumerate(stack):
        gy, gx = divmod(i, 5)
        tomo[:, gy * 20:(gy + 1) * 20, gx * 20:(gx + 1) * 20] = box
        xyz.append([gx * 20 + 10, gy * 20 + 10, 10])
    write_volume(str(tmp_path / "t.mrc"), tomo, 10.0)
    write_table(str(tmp_path / "t.tsv"), CoordTable(xyz, ["p"] * len(xyz), np.linspace(0.5, 1, len(xyz))))
    out = tmp_path / "labels.tsv"
    r = subprocess.run([sys.executable, "-m", "picker3d.engine.cli", "classify", "--tomograms", str(tmp_path / "t.mrc"),
                        "--coords", str(tmp_path / "t.tsv"), "--box", "20", "--bin", "1", "--k-range", "2-4",
                        "--iterations", "3", "--out", str(out), "--boxes-dir", str(tmp_path / "boxes")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = read_table(str(out))
    # the sub-volumes as files, in table order, in the tomogram's normalised units
    assert list(table.extra["box_file"]) == [f"particle_{i:06d}.mrc" for i in range(1, 41)]
    box7, vs = read_volume(str(tmp_path / "boxes" / table.extra["box_file"][7]))
    gy, gx = divmod(7, 5)
    from picker3d.engine.volume import volume_stats
    mean, std = volume_stats(tomo)               # the robust estimate the picker uses
    assert abs(mean - tomo.mean()) > 1e-3        # (differs from the plain one on these boxes)
    expected = (tomo[:, gy * 20:(gy + 1) * 20, gx * 20:(gx + 1) * 20] - mean) / std
    np.testing.assert_allclose(box7, expected, atol=1e-4)
    assert vs == pytest.approx(10.0)
    assert len(table) == 40 and "cluster" in table.extra and "posterior" in table.extra
    np.testing.assert_allclose(table.xyz, xyz, atol=1e-3)   # positions and scores kept
    assert clustering_scores(truth, table.extra["cluster"])["homogeneity"] >= 0.8
    k = int(table.extra["cluster"].max())
    avgs = sorted(os.listdir(tmp_path / "labels_averages"))
    # each class's aligned average and, for classes of two or more, its two half averages
    sizes = np.bincount(table.extra["cluster"].astype(int))[1:]
    assert avgs == sorted([f"class_{i:02d}.mrc" for i in range(1, k + 1)]
                          + [f"class_{i:02d}_{h}.mrc" for i in range(1, k + 1) if sizes[i - 1] >= 2
                             for h in ("half1", "half2")])
    assert read_volume(str(tmp_path / "labels_averages" / avgs[0]))[0].shape == (20, 20, 20)
    hist = json.loads((tmp_path / "labels_disca.json").read_text())
    assert hist["k"] == k and len(hist["history"]) >= 1 and hist["aligned"] is True
    # every final class named by the clustering class it came from; merges account for the K
    assert len(hist["clustering_classes"]) == k
    assert set(hist["clustering_classes"]) <= set(range(1, hist["k_clustering"] + 1))
    assert k <= hist["k_clustering"] - len(hist["merges"]) + len(hist["density_splits"])   # less dissolved ones
    # the per-class resolution, and each member's alignment in the table
    assert [r["class"] for r in hist["resolution"]] == [i for i in range(1, k + 1) if sizes[i - 1] >= 2]
    assert all(r["fsc_0143_A"] >= 20.0 and len(r["fsc"]) == 10 for r in hist["resolution"])   # Nyquist 2 x 10 Å
    for col in ("rot", "tilt", "psi", "shift_x", "shift_y", "shift_z"):
        assert np.all(np.isfinite(table.extra[col].astype(float))), col
    assert set(table.extra["tomogram"]) == {"t"}            # the tomogram's file stem
    # bad input: one line naming the parameter
    r = subprocess.run([sys.executable, "-m", "picker3d.engine.cli", "classify", "--tomograms", str(tmp_path / "t.mrc"),
                        "--coords", str(tmp_path / "t.tsv"), "--k-range", "5-2", "--out", str(tmp_path / "x.tsv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--k-range" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.tsv").exists()


def test_radial_profiles_carry_equal_noise_per_shell_and_tell_sizes_apart():
    """Noise-equalised radial profiles: on pure noise every shell's column has the same
    spread (the central voxel does not outweigh a 300-voxel shell); a small and a large
    ball in the same noise differ in the shells between their radii."""
    from picker3d.engine.classification.descriptors import radial_profiles
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((400, 16, 16, 16)).astype(np.float32)
    spread = radial_profiles(noise).std(axis=0)
    assert np.all(np.abs(spread - 1.0) < 0.15), spread
    r = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(16) - 7.5] * 3, indexing="ij")))
    small, large = (r <= 3).astype(np.float32), (r <= 6).astype(np.float32)
    boxes = np.stack([small + 0.3 * rng.standard_normal(r.shape) for _ in range(20)]
                     + [large + 0.3 * rng.standard_normal(r.shape) for _ in range(20)]).astype(np.float32)
    prof = radial_profiles(boxes)
    assert prof[20:, 5].min() > prof[:20, 5].max()     # shell 5 lies inside the large ball only


def test_two_species_of_very_different_sizes_in_a_crowded_tomogram_split_apart():
    """Picks in context in miniature: 20 copies each of a 9- and a 19-voxel species in a small crowded
    tomogram (crowders, a membrane, gold, SNR 0.05, +-60 deg), boxed at their centres with a
    box for the larger one, boxes at the border padded: no class may mix the two (picker3d
    0.1 merged such species; with flat padding one seed of six still did)."""
    from picker3d.engine.simulation.dataset import simulate_tomogram
    for seed in (0, 1):
        sim = simulate_tomogram(shape=(64, 160, 160), seed=seed, snr=0.05, species=["tiny", "barrel"],
                                voxel_size=8.5, counts={"tiny": 20, "barrel": 20}, membranes=1, gold=2)
        xyz = np.array([[r["x"], r["y"], r["z"]] for r in sim["rows"]])
        truth = np.array([r["class"] for r in sim["rows"]])
        stack, kept, outside = extract_subvolumes(sim["tomogram"], xyz, 24, per_box=False)
        assert outside > 0 and len(kept) == len(truth)
        res = disca_on_boxes(stack, bin=2, log=lambda m: None, seed=0)
        s = clustering_scores(truth, res["labels"])
        assert s["homogeneity"] >= 0.9, (seed, s)
        assert s["k_found"] <= 8, (seed, s)

"""Picking: overlap tiles, post-processing (peaks, de-duplication, borders), slab-wise picking."""
import numpy as np
import pytest
import torch

from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate
from picker3d.engine.network import ResUNet3D, SliceUNet
from picker3d.engine.picking.peaks import find_particles
from picker3d.engine.picking.tiles import _tile_grid, predict_volume, tile_overhead, tile_sides
from picker3d.engine.volume import normalize


@pytest.mark.parametrize("network", [ResUNet3D, SliceUNet])
@pytest.mark.parametrize("vol_shape", [(37, 53, 61), (20, 90, 70)])
def test_tiling_equals_whole_volume_away_from_borders(vol_shape, network):
    torch.manual_seed(0)
    net = network(2).eval()
    vol = np.random.default_rng(0).normal(size=vol_shape).astype(np.float32)
    tiled = predict_volume(net, vol, tile=32, pad=8)
    # whole volume in one tile of a multiple-of-8 size, same mirror padding
    big = -(-(max(vol_shape) + 16) // 8) * 8
    whole = predict_volume(net, vol, tile=big, pad=8)
    m = 8   # away from the volume border the receptive field sees the same data
    # receptive field of the 4-level net exceeds the pad: compare where both tiles saw
    # the same context, i.e. identical results are expected only if the receptive field
    # fits in the pad; check closeness in the interior
    diff = np.abs(tiled - whole)[:, m:-m, m:-m, m:-m]
    assert tiled.shape == (3,) + vol_shape
    assert np.allclose(tiled.sum(0), 1.0, atol=1e-5)
    assert diff.mean() < 0.02 and np.median(diff) < 0.01


@pytest.mark.parametrize("shape", [(48, 128, 128), (100, 256, 256), (7, 300, 33), (200, 512, 512)])
def test_tiles_stay_inside_the_volume_cover_it_and_cut_the_overhead(shape):
    tile, pad = 96, 12
    sides, starts, bounds = _tile_grid(shape, tile, pad)
    assert sides == tile_sides(shape, tile, pad)
    for n, side, st, bd in zip(shape, sides, starts, bounds):
        assert side <= tile and side % 8 == 0
        assert st[0] == 0 and bd[0] == 0 and bd[-1] == n and len(bd) == len(st) + 1
        assert all(b0 < b1 for b0, b1 in zip(bd, bd[1:]))        # kept planes: contiguous, no gap
        if len(st) == 1:
            assert n <= side < n + 8                              # one tile: at most 7 planes beyond
            continue
        assert st[-1] + side == n                                 # flush with both faces
        for i, a in enumerate(st):
            assert bd[i] >= (a + pad if i else 0) and bd[i + 1] <= (a + side - pad if i < len(st) - 1 else n)
    cubic = np.prod([-(-n // (tile - 2 * pad)) * tile for n in shape]) / np.prod(shape)
    assert 1.0 <= tile_overhead(shape, tile, pad) <= cubic
    if shape == (48, 128, 128):
        assert tile_overhead(shape, tile, pad) < 0.4 * cubic      # 1.6 against 4.5


def test_a_volume_in_one_tile_is_predicted_as_a_whole_with_no_padding():
    # the network sees the volume's faces as in training, where patches are cut inside the
    # tomogram: nothing mirrored beyond them
    torch.manual_seed(0)
    net = ResUNet3D(2, channels=(4, 8, 12, 16)).eval()
    vol = np.random.default_rng(3).standard_normal((16, 40, 48)).astype(np.float32)
    tiled = predict_volume(net, vol, tile=48, pad=8, precision="fp32")
    with torch.inference_mode():
        whole = net.probabilities(net(torch.from_numpy(normalize(vol))[None, None]))[0].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_postprocessing_recovers_planted_peaks_exactly():
    shape = (40, 60, 60)
    names = ["a", "b"]
    diam = {"a": 10.0, "b": 8.0}
    centres = np.array([[10, 12, 15], [30, 40, 20], [50, 20, 30], [15, 45, 12]], float)   # x y z
    cls = [1, 2, 1, 2]
    probs = np.zeros((3,) + shape, np.float32)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    for (x, y, z), c in zip(centres, cls):
        # what a weak-label-trained network produces: a plateau as wide as the particle
        r2 = (xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2
        probs[c] = np.maximum(probs[c], 0.9 * (r2 <= (diam[names[c - 1]] / 2) ** 2))
    probs[0] = 1 - probs[1:].sum(0)
    t = find_particles(probs, names, diam, t_seg=0.5, t_lm=0.1)
    order = np.lexsort(t.xyz.T[::-1])
    ref_order = np.lexsort(centres.T[::-1])
    np.testing.assert_allclose(t.xyz[order], centres[ref_order], atol=0.01)
    assert t.classes[order].tolist() == [names[cls[i] - 1] for i in ref_order]
    assert len(t) == 4 and np.all(t.scores > 0.5)
    cc = find_particles(probs, names, diam, t_seg=0.5, mode="cc")
    assert len(cc) == 4


def test_deduplication_across_classes():
    shape = (30, 30, 30)
    probs = np.zeros((3,) + shape, np.float32)
    zz, yy, xx = np.mgrid[:30, :30, :30]
    def blob(x):
        return np.exp(-((xx - x) ** 2 + (yy - 15) ** 2 + (zz - 15) ** 2) / (2 * 1.5 ** 2))
    probs[1] = 0.9 * blob(12)
    probs[2] = 0.6 * blob(16)   # 4 voxels away: the same particle (t_dist = ceil(10/2))
    probs[0] = 1 - probs[1:].sum(0)
    t = find_particles(probs, ["a", "b"], {"a": 10, "b": 10}, t_seg=0.1, t_lm=0.01)
    assert len(t) == 1 and t.classes[0] == "a"


def test_flip_averaging_equals_manual_average():
    torch.manual_seed(3)
    net = ResUNet3D(2, coord_conv=False).eval()
    vol = np.random.default_rng(1).normal(size=(24, 32, 40)).astype(np.float32)
    avg = predict_volume(net, vol, tile=48, pad=8, flips=2)
    a = predict_volume(net, vol, tile=48, pad=8)
    b = predict_volume(net, vol[:, :, ::-1].copy(), tile=48, pad=8)[:, :, :, ::-1]
    np.testing.assert_allclose(avg, (a + b) / 2, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-3)   # the mirror really changes the prediction


def test_large_plateaus_give_one_peak_each_next_to_small_particles():
    """A large class next to a small one: each large plateau yields exactly one particle
    (a window sized for the smallest class would split it into several)."""
    shape = (48, 96, 96)
    names = ["big", "small"]
    diam = {"big": 24.0, "small": 6.0}
    rng = np.random.default_rng(4)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    probs = np.zeros((3,) + shape, np.float32)
    centres = [((20, 20, 24), 1), ((70, 30, 24), 1), ((40, 70, 20), 1), ((80, 80, 30), 2), ((15, 75, 12), 2)]
    for (x, y, z), c in centres:
        r2 = (xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2
        probs[c] = np.maximum(probs[c], (0.8 + 0.1 * rng.random(shape)) * (r2 <= (diam[names[c - 1]] / 2) ** 2))
    probs[0] = 1 - probs[1:].sum(0)
    t = find_particles(probs, names, diam, t_seg=0.5, t_lm=0.1)
    assert sorted(t.classes.tolist()) == ["big", "big", "big", "small", "small"]
    ref = CoordTable(np.array([p for p, _ in centres], float), [names[c - 1] for _, c in centres])
    r = evaluate(t, ref, diam)
    assert r["f1"] == 1.0 and r["mean_class_f1"] == 1.0


def test_labels_wider_than_the_particle_give_one_peak_each():
    """Constant-diameter weak labels (DeepETPicker's Const9) are wider than a small particle:
    peak finding at the label's scale keeps one pick per plateau; at the particle's own scale
    the noisy plateau splits into several picks."""
    shape = (40, 64, 64)
    names, diam, label = ["small"], {"small": 4.0}, {"small": 12.0}
    rng = np.random.default_rng(5)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    probs = np.zeros((2,) + shape, np.float32)
    centres = [(16, 16, 20), (46, 20, 20), (30, 48, 18)]
    for x, y, z in centres:
        r2 = (xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2
        probs[1] = np.maximum(probs[1], (0.7 + 0.3 * rng.random(shape)) * (r2 <= 6 ** 2))
    probs[0] = 1 - probs[1]
    t = find_particles(probs, names, diam, t_seg=0.5, t_lm=0.1, label_diameters=label)
    assert len(t) == 3
    r = evaluate(t, CoordTable(np.array(centres, float), names * 3), diam)
    assert r["f1"] == 1.0
    assert len(find_particles(probs, names, diam, t_seg=0.5, t_lm=0.1)) > 3


def test_border_margin_drops_particles_near_faces_for_every_class():
    shape = (30, 40, 40)
    zz, yy, xx = np.mgrid[:30, :40, :40]
    probs = np.zeros((3,) + shape, np.float32)
    for (x, y, z), c in (((3, 20, 15), 1), ((20, 20, 15), 1), ((20, 37, 15), 2), ((20, 10, 15), 2)):
        probs[c] = np.maximum(probs[c], 0.9 * (((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) <= 9))
    probs[0] = 1 - probs[1:].sum(0)
    all_ = find_particles(probs, ["a", "b"], {"a": 6, "b": 6}, t_seg=0.3, t_lm=0.1)
    inner = find_particles(probs, ["a", "b"], {"a": 6, "b": 6}, t_seg=0.3, t_lm=0.1, border=5)
    assert len(all_) == 4
    assert sorted(map(tuple, np.round(inner.xyz).astype(int).tolist())) == [(20, 10, 15), (20, 20, 15)]


class _PointwiseNet(torch.nn.Module):
    """A stand-in network whose logits depend on each voxel alone (so any tiling is exact):
    class 1 where the density is high, class 2 where it is very high."""
    multiple = 8
    n_classes = 2

    def forward(self, x, offset=(0, 0, 0), full_shape=None):
        return torch.cat([torch.zeros_like(x), 6 * x - 3, 12 * x - 10], dim=1)

    def probabilities(self, logits):
        return torch.softmax(logits, dim=1)


def test_predicting_a_z_range_equals_the_whole_volume_slice():
    torch.manual_seed(0)
    net = ResUNet3D(2, channels=(4, 8, 12, 16)).eval()
    vol = np.random.default_rng(1).standard_normal((40, 36, 44)).astype(np.float32)
    whole = predict_volume(net, vol, tile=32, pad=4, flips=8)
    for lo, hi in ((0, 9), (13, 27), (31, 40)):
        part = predict_volume(net, vol, tile=32, pad=4, flips=8, z_range=(lo, hi))
        np.testing.assert_allclose(part, whole[:, lo:hi], atol=1e-5)


def test_slab_picking_equals_whole_volume_picking():
    from scipy import ndimage

    from picker3d.engine.picking.tomogram import pick_tomogram
    rng = np.random.default_rng(2)
    vol = np.zeros((72, 40, 40), np.float32)
    pts = rng.uniform([3, 3, 3], [69, 37, 37], size=(40, 3)).astype(int)
    vol[tuple(pts.T)] = rng.uniform(1, 3, len(pts))
    vol = ndimage.gaussian_filter(vol, 1.5) * 30
    meta = {"classes": ["a", "b"], "diameters": {"a": 6.0, "b": 8.0}, "bin": 1, "tile": 32, "pad": 4, "flips": 1,
            "thresholds": {"t_seg": 0.3, "class": {"a": 0.1, "b": 0.1}}}
    net = _PointwiseNet()
    calls = []
    forward = net.forward
    net.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
    whole, probs = pick_tomogram(net, meta, vol, slab=0)
    n_whole, calls[:] = len(calls), []
    slabbed, background = pick_tomogram(net, meta, vol, slab=8, border=2)
    assert len(calls) == n_whole        # rows of tiles shared by neighbouring slabs are computed once
    whole_b, _ = pick_tomogram(net, meta, vol, slab=0, border=2)
    assert len(whole) >= 10 and background.shape == (1,) + vol.shape
    np.testing.assert_allclose(background[0], probs[0], atol=1e-6)
    # binned model: the border and de-duplication work in the binned frame in both paths
    meta2 = dict(meta, bin=2)
    whole2, _ = pick_tomogram(net, meta2, vol, slab=0, border=5)
    slabbed2, _ = pick_tomogram(net, meta2, vol, slab=6, border=5)
    assert len(whole2) >= 3
    for a, b in ((whole_b, slabbed), (whole2, slabbed2)):
        oa, ob = np.lexsort(a.xyz.T[::-1]), np.lexsort(b.xyz.T[::-1])
        np.testing.assert_allclose(a.xyz[oa], b.xyz[ob], atol=1e-6)
        assert list(a.classes[oa]) == list(b.classes[ob])
        np.testing.assert_allclose(a.scores[oa], b.scores[ob], atol=1e-6)


def test_model_files_without_peak_smoothing_keep_their_calibration():
    from picker3d.engine.picking.tomogram import peak_smoothing
    assert peak_smoothing({"labels": "complete"}) == 0.25       # files written before the key
    assert peak_smoothing({"labels": "sparse"}) == pytest.approx(1 / 12)
    assert peak_smoothing({"labels": "complete", "peak_smoothing": 1 / 6}) == pytest.approx(1 / 6)

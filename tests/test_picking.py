"""Picking engine: network shapes, overlap-tile equivalence, post-processing, training, resume."""
import os

import numpy as np
import pytest
import torch

from picker3d.engine.coords import CoordTable, read_table, write_table
from picker3d.engine.metrics import evaluate
from picker3d.engine.network import ResUNet3D, SliceUNet, autocast_dtype
from picker3d.engine.pick import _tile_grid, find_particles, predict_volume, tile_overhead, tile_sides
from picker3d.engine.volume import normalize


@pytest.mark.parametrize("network", [ResUNet3D, SliceUNet])
@pytest.mark.parametrize("shape", [(24, 40, 56), (8, 16, 32)])
def test_network_output_shape(shape, network):
    net = network(3).eval()
    with torch.inference_mode():
        out = net(torch.zeros((2, 1) + shape))
    assert out.shape == (2, 4) + shape


def test_precision_choice_and_bfloat16_inference_matches_float32():
    assert autocast_dtype("cpu", "fp32") is None
    assert autocast_dtype("cpu", "bf16") == torch.bfloat16
    assert autocast_dtype("cuda", "auto") == torch.float16        # inference on a GPU: half precision
    with pytest.raises(ValueError, match="--precision"):
        autocast_dtype("cpu", "fp16")
    torch.manual_seed(0)
    net = ResUNet3D(2).eval()
    vol = np.random.default_rng(1).normal(size=(24, 40, 40)).astype(np.float32)
    full = predict_volume(net, vol, tile=32, pad=8, precision="fp32")
    half = predict_volume(net, vol, tile=32, pad=8, precision="bf16")
    assert half.dtype == np.float32 and np.allclose(half.sum(0), 1.0, atol=1e-5)
    diff = np.abs(full - half)
    assert 0 < diff.max() and diff.mean() < 0.01       # really computed in bfloat16, and close


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


def test_a_training_patch_longer_than_the_volume_is_completed_with_zeros():
    # as picking completes a tile longer than its axis: the normalised mean, nothing mirrored
    from picker3d.engine.train import TomogramData, sample_batch
    vol = np.random.default_rng(4).standard_normal((8, 24, 24)).astype(np.float32)
    data = [TomogramData(vol, CoordTable([[12, 12, 4]], ["a"]), ["a"], {"a": 6.0})]
    x, y, _, _ = sample_batch(data, np.random.default_rng(0), 16, 4, 1)
    for patch, lab in zip(x[:, 0].numpy(), y.numpy()):
        filled = np.abs(patch).sum(axis=(1, 2)) > 0
        assert filled.sum() == 8 and (filled[:8].all() or filled[8:].all())   # a z-mirror may put it first
        assert not lab[~filled].any()


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
    blob = lambda x: np.exp(-((xx - x) ** 2 + (yy - 15) ** 2 + (zz - 15) ** 2) / (2 * 1.5 ** 2))
    probs[1] = 0.9 * blob(12)
    probs[2] = 0.6 * blob(16)   # 4 voxels away: the same particle (t_dist = ceil(10/2))
    probs[0] = 1 - probs[1:].sum(0)
    t = find_particles(probs, ["a", "b"], {"a": 10, "b": 10}, t_seg=0.1, t_lm=0.01)
    assert len(t) == 1 and t.classes[0] == "a"


def _small_dataset(seed):
    from picker3d.engine.simulate import simulate_tomogram
    s = simulate_tomogram(shape=(64, 64, 64), seed=seed, snr=2.0, species=["barrel"], counts={"barrel": 10},
                          crowders=0, vesicles=0, membranes=0, gold=0)
    return s["tomogram"], CoordTable.from_rows(s["rows"])


def test_short_training_picks_large_particles(tmp_path):
    from picker3d.engine.pick import pick_tomogram
    from picker3d.engine.train import load_model, train
    torch.set_num_threads(2)
    vol, tab = _small_dataset(10)
    test_vol, test_tab = _small_dataset(12)
    out = str(tmp_path / "m.pt")
    lines = []
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, [vol], [tab], epochs=4, iters_per_epoch=10,
          patch=32, batch=2, tile=64, pad=8, seed=0, lr=5e-3, log=lines.append)
    model, meta = load_model(out)
    assert meta["classes"] == ["barrel"] and meta["voxel_size"] == 10.0
    assert len(meta["history"]) == 4 and "val_f1" in meta["history"][-1]
    assert meta["thresholds"]["class"]["barrel"] > 0
    # the last log line names the kept epoch, its validation F1 and the stored thresholds
    best = max(reversed(meta["history"]), key=lambda h: h["val_f1"])     # the later of equal epochs
    assert lines[-1].startswith(f"kept epoch {best['epoch']} of 4: validation F1 {meta['best_val_f1']:.3f}")
    assert f"score barrel {meta['thresholds']['class']['barrel']:g}" in lines[-1]
    assert meta["peak_smoothing"] == pytest.approx(1 / 6)     # what the thresholds were calibrated with
    picked, _ = pick_tomogram(model, meta, test_vol)
    r = evaluate(picked, test_tab, {"barrel": 17})
    assert r["f1"] > 0.8, r


def test_model_files_without_peak_smoothing_keep_their_calibration():
    from picker3d.engine.pick import peak_smoothing
    assert peak_smoothing({"labels": "complete"}) == 0.25       # files written before the key
    assert peak_smoothing({"labels": "sparse"}) == pytest.approx(1 / 12)
    assert peak_smoothing({"labels": "complete", "peak_smoothing": 1 / 6}) == pytest.approx(1 / 6)


def test_resume_gives_the_same_model(tmp_path):
    from picker3d.engine.train import train
    torch.set_num_threads(2)
    vol, tab = _small_dataset(20)
    kw = dict(epochs=3, iters_per_epoch=3, patch=24, batch=2, tile=32, pad=4, seed=1, log=lambda m: None)
    a = str(tmp_path / "a.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, a, **kw)
    b = str(tmp_path / "b.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, b, stop_after_epoch=1, **kw)   # "killed" after epoch 1
    train([vol], [tab], ["barrel"], {"barrel": 17}, b, resume=True, **kw)
    sa = torch.load(a + ".ckpt", weights_only=False)["model"]
    sb = torch.load(b + ".ckpt", weights_only=False)["model"]
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k


def test_resume_keeps_the_interrupted_runs_binning_grids(tmp_path):
    """A run started with --no-bin-phases and resumed without the flag stays on one grid."""
    from picker3d.engine.train import load_model, train
    vol, tab = _small_dataset(33)
    out = str(tmp_path / "m.pt")
    kw = dict(epochs=2, iters_per_epoch=1, patch=24, batch=2, tile=32, pad=4, channels=(4, 8), bin=2)
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, bin_phases=False, stop_after_epoch=1,
          log=lambda m: None, **kw)
    assert torch.load(out + ".ckpt", weights_only=False)["bin_phases"] is False
    lines = []
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, resume=True, log=lines.append, **kw)
    assert load_model(out)[1]["bin_phases"] is False
    assert not any(m.startswith("binning phases") for m in lines), lines
    # the command line wins over the checkpoint, with a warning
    lines.clear()
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, resume=True, bin_phases=True, log=lines.append,
          **dict(kw, epochs=3))
    assert load_model(out)[1]["bin_phases"] is True
    assert any(m.startswith("warning: --bin-phases differs") for m in lines), lines


def test_init_starts_from_a_trained_model(tmp_path):
    """--init: a trained model's weights carry over (one near-zero step picks as well as the
    source, a random start does not); other classes get a new output layer and keep every
    other layer; another architecture is refused naming --init and the flag."""
    from picker3d.engine.errors import InputError
    from picker3d.engine.pick import pick_tomogram
    from picker3d.engine.train import load_model, train
    torch.set_num_threads(2)
    vol, tab = _small_dataset(10)
    test_vol, test_tab = _small_dataset(12)
    src = str(tmp_path / "src.pt")
    kw = dict(patch=32, batch=2, tile=64, pad=8, seed=0, log=lambda m: None)
    train([vol], [tab], ["barrel"], {"barrel": 17}, src, [vol], [tab], epochs=4, iters_per_epoch=10, lr=5e-3, **kw)
    brief = dict(kw, epochs=1, iters_per_epoch=1, lr=1e-9)

    def f1(path):
        model, meta = load_model(path)
        return evaluate(pick_tomogram(model, meta, test_vol)[0], test_tab, {"barrel": 17})["f1"]
    lines = []
    tuned = str(tmp_path / "tuned.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, tuned, [vol], [tab], init=src, **dict(brief, log=lines.append))
    scratch = str(tmp_path / "scratch.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, scratch, [vol], [tab], **brief)
    assert f1(tuned) > 0.8 and f1(scratch) < 0.5, (f1(tuned), f1(scratch))
    assert any(m.startswith(f"starting from {src}") and "every layer kept" in m for m in lines), lines
    assert load_model(tuned)[1]["init"] == {"path": os.path.abspath(src), "classes": ["barrel"],
                                            "output_layer_kept": True}
    # an interrupted fine-tuning resumed: the model still records where it started
    resumed = str(tmp_path / "resumed.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, resumed, init=src, stop_after_epoch=1,
          **dict(brief, epochs=2))
    train([vol], [tab], ["barrel"], {"barrel": 17}, resumed, init=src, resume=True, **dict(brief, epochs=2))
    assert load_model(resumed)[1]["init"]["path"] == os.path.abspath(src)
    # another class name: every layer but the output one comes from the source
    other = str(tmp_path / "other.pt")
    tab_b = CoordTable(tab.xyz, ["cage"] * len(tab))
    train([vol], [tab_b], ["cage"], {"cage": 17}, other, init=src, **brief)
    # weights (batch-norm running statistics move with any step, whatever the rate)
    s_src, s_other = (dict(load_model(p)[0].named_parameters()) for p in (src, other))
    assert load_model(other)[1]["init"]["output_layer_kept"] is False
    for k in s_src:
        same = torch.allclose(s_src[k].float(), s_other[k].float(), atol=1e-5)
        assert same != k.startswith("head."), k
    with pytest.raises(InputError, match=r"--init: .*src.pt was trained with --channels 8,16,24,36, this run uses 4,8"):
        train([vol], [tab], ["barrel"], {"barrel": 17}, str(tmp_path / "x.pt"), init=src, channels=(4, 8), **brief)


def test_cli_train_and_pick(tmp_path):
    from picker3d.engine.cli import main
    from picker3d.engine.mrcio import write_volume
    vol, tab = _small_dataset(30)
    write_volume(tmp_path / "t.mrc", vol, 10.0)
    write_table(tmp_path / "t.tsv", tab)
    assert main(["train", "--tomograms", str(tmp_path / "t.mrc"), "--coords", str(tmp_path / "t.tsv"),
                 "--diameters", "barrel=17", "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                 "--iters-per-epoch", "2", "--patch", "24", "--batch", "1", "--tile", "32", "--pad", "4",
                 "--device", "cpu"]) == 0
    from picker3d.engine.modelfile import load_model
    meta = load_model(str(tmp_path / "m.pt"))[1]
    assert meta["bin"] == 2      # --bin auto: a 17-voxel class
    # no --val-tomograms: the training tomogram calibrated the thresholds
    assert meta["thresholds"] is not None and set(meta["thresholds"]["class"]) == {"barrel"}
    assert main(["pick", "--model", str(tmp_path / "m.pt"), "--tomograms", str(tmp_path / "t.mrc"),
                 "--out-dir", str(tmp_path / "picks"), "--threshold", "0.0", "--score-map"]) == 0
    head = (tmp_path / "picks" / "t.tsv").read_text().splitlines()[0]
    assert head == "x\ty\tz\tclass\tscore"
    assert os.path.exists(tmp_path / "picks" / "t_score.mrc")
    read_table(tmp_path / "picks" / "t.tsv", allow_empty=True)
    # a device list: the tomograms are shared out, one model per device, same tables
    import shutil
    for name in ("u", "v"):
        shutil.copy(tmp_path / "t.mrc", tmp_path / f"{name}.mrc")
    tomos = [str(tmp_path / f"{n}.mrc") for n in ("t", "u", "v")]
    assert main(["pick", "--model", str(tmp_path / "m.pt"), "--tomograms", *tomos, "--threshold", "0.0",
                 "--out-dir", str(tmp_path / "multi"), "--device", "cpu,cpu"]) == 0
    single = (tmp_path / "picks" / "t.tsv").read_text()
    assert [(tmp_path / "multi" / f"{n}.tsv").read_text() for n in ("t", "u", "v")] == [single] * 3


def test_model_file_errors(tmp_path):
    from picker3d.engine.errors import InputError
    from picker3d.engine.modelfile import load_model
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.pt: not a readable picker3d model"):
        load_model(str(tmp_path / "junk.pt"))
    torch.save({"format": "picker3d-model", "version": 99}, tmp_path / "new.pt")
    with pytest.raises(InputError, match="newer than this picker3d"):
        load_model(str(tmp_path / "new.pt"))


def test_class_without_annotation_is_refused(tmp_path):
    from picker3d.engine.errors import InputError
    from picker3d.engine.train import train
    vol, tab = _small_dataset(40)
    with pytest.raises(InputError, match="class\\(es\\) rod have no annotation"):
        train([vol], [tab], ["barrel", "rod"], {"barrel": 17, "rod": 20}, str(tmp_path / "m.pt"), epochs=1)
    assert not os.path.exists(tmp_path / "m.pt")


def test_binning_coordinates_round_trip_and_block_mean():
    from picker3d.engine.pick import upsample
    from picker3d.engine.volume import bin_volume, from_binned, to_binned
    xyz = np.array([[0.0, 0.0, 0.0], [10.5, 3.25, 7.0], [63.0, 1.0, 2.0]])
    np.testing.assert_allclose(from_binned(to_binned(xyz, 2), 2), xyz, atol=1e-12)
    # voxels 0 and 1 are binned into voxel 0, whose centre is at 0.5 in the original frame
    np.testing.assert_allclose(from_binned(np.zeros((1, 3)), 2), [[0.5, 0.5, 0.5]])
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    b = bin_volume(vol, 2)
    assert b.shape == (2, 3, 3)
    assert b[0, 0, 0] == pytest.approx(vol[:2, :2, :2].mean())
    assert upsample(b, 2, vol.shape).shape == vol.shape


def test_flip_averaging_equals_manual_average():
    torch.manual_seed(3)
    net = ResUNet3D(2, coord_conv=False).eval()
    vol = np.random.default_rng(1).normal(size=(24, 32, 40)).astype(np.float32)
    avg = predict_volume(net, vol, tile=48, pad=8, flips=2)
    a = predict_volume(net, vol, tile=48, pad=8)
    b = predict_volume(net, vol[:, :, ::-1].copy(), tile=48, pad=8)[:, :, :, ::-1]
    np.testing.assert_allclose(avg, (a + b) / 2, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-3)   # the mirror really changes the prediction


def test_batched_coord_conv_equals_one_patch_at_a_time():
    torch.manual_seed(0)
    net = ResUNet3D(2).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    offs, shapes = [(0, 8, 16), (4, 0, 0)], [(40, 40, 40), (32, 64, 64)]
    with torch.inference_mode():
        batched = net(x, offset=offs, full_shape=shapes)
        single = torch.cat([net(x[i:i + 1], offset=offs[i], full_shape=shapes[i]) for i in range(2)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_depth_only_coord_conv_ignores_x_and_y():
    """coord_conv="z" (training's default): the output depends on the depth of the tile in the
    tomogram, not on where it lies in x and y; with x, y, z it does."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 16)
    full = (40, 64, 64)
    for mode, xy_matters in (("z", False), (True, True)):
        net = ResUNet3D(2, coord_conv=mode).eval()
        with torch.inference_mode():
            ref = net(x, offset=(0, 0, 0), full_shape=full)
            moved_xy = net(x, offset=(0, 24, 40), full_shape=full)
            moved_z = net(x, offset=(20, 0, 0), full_shape=full)
        assert torch.allclose(ref, moved_xy, atol=1e-6) != xy_matters
        assert not torch.allclose(ref, moved_z, atol=1e-4)
    with pytest.raises(ValueError, match="coord_conv"):
        ResUNet3D(2, coord_conv="xy")


def test_slice_network_sees_two_slices_either_side_only():
    """SliceUNet (seed 002 §3.3): 2-D layers per slice, then two 3x3x3 convolutions, so a change
    in slice k reaches the output at slices k-2..k+2 and nowhere else; the 3-D U-Net's
    receptive field spans the whole patch."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 24, 32, 32)
    y = x.clone()
    y[0, 0, 12] += torch.randn(32, 32)
    for net, reach in ((SliceUNet(2, coord_conv="z").eval(), 2), (ResUNet3D(2, coord_conv="z").eval(), None)):
        with torch.inference_mode():
            changed = (net(x) - net(y)).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
        z = torch.nonzero(changed).ravel().tolist()
        if reach is None:
            assert z[0] < 12 - 2 and z[-1] > 12 + 2
        else:
            assert z == list(range(12 - reach, 12 + reach + 1))


def test_slice_network_model_file_round_trip(tmp_path):
    from picker3d.engine.modelfile import load_model, save_model
    torch.manual_seed(0)
    net = SliceUNet(2, channels=(4, 8, 8, 8), heatmap=True, coord_conv="z").eval()
    save_model(str(tmp_path / "m.pt"), net, {"classes": ["a", "b"]})
    back, meta = load_model(str(tmp_path / "m.pt"))
    x = torch.randn(1, 1, 16, 16, 16)
    assert isinstance(back, SliceUNet) and meta["arch"]["network"] == "slice2d"
    with torch.inference_mode():
        torch.testing.assert_close(back(x), net(x))


def test_hard_negatives_avoid_annotated_particles():
    from picker3d.engine.simulate import simulate_tomogram
    from picker3d.engine.train import TomogramData
    s = simulate_tomogram(shape=(48, 96, 96), seed=5, snr=1.0, species=["barrel"], counts={"barrel": 6},
                          crowders=8, vesicles=0, membranes=0, gold=0)
    tab = CoordTable.from_rows(s["rows"])
    d = TomogramData(s["tomogram"], tab, ["barrel"], {"barrel": 17.0})
    assert len(d.negatives) > 0
    dist = np.linalg.norm(d.negatives[:, None, ::-1] - tab.xyz[None], axis=2).min(axis=1)
    assert dist.min() > 0.75 * 17


def test_binned_training_picks_in_original_voxels(tmp_path):
    from picker3d.engine.pick import pick_tomogram
    from picker3d.engine.train import load_model, train
    torch.set_num_threads(2)
    vol, tab = _small_dataset(50)
    test_vol, test_tab = _small_dataset(52)
    out = str(tmp_path / "m.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, [vol], [tab], epochs=6, iters_per_epoch=10,
          patch=24, batch=4, tile=32, pad=4, seed=0, lr=5e-3, bin=2, flips=2, log=lambda m: None)
    model, meta = load_model(out)
    assert meta["bin"] == 2 and meta["flips"] == 2 and meta["diameters"]["barrel"] == 17
    assert meta["bin_phases"] is True       # the default: shifted binning grids trained on as well
    picked, probs = pick_tomogram(model, meta, test_vol)
    assert probs.shape[1:] == (32, 32, 32)
    r = evaluate(picked, test_tab, {"barrel": 17})
    assert r["f1"] > 0.8, r


def test_one_cycle_schedule_shape():
    from picker3d.engine.train import one_cycle_lr
    assert one_cycle_lr(0.0, 1.0) == pytest.approx(1 / 25)
    assert one_cycle_lr(0.2, 1.0) == pytest.approx(1.0)
    assert one_cycle_lr(1.0, 1.0) == pytest.approx(1e-4)
    assert one_cycle_lr(2.0, 1.0) == pytest.approx(1e-4)   # past a time budget: stays at the floor
    lrs = [one_cycle_lr(f, 1.0) for f in np.linspace(0.2, 1, 20)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_auto_binning_keeps_small_species_at_full_resolution():
    from picker3d.engine.train import auto_bin
    assert auto_bin([25, 17, 16]) == 2
    assert auto_bin([59, 39, 27, 57], "cpu") == 4     # large particles alone: bin 4 on a CPU
    assert auto_bin([59, 39, 27, 57], "cuda") == 2
    assert auto_bin([59, 39, 23.9], "cpu") == 2
    five = [25, 17, 12, 24, 8]        # the simulator's five species
    assert auto_bin(five, "cuda") == 1          # a GPU trains long enough for tiny at full resolution
    assert auto_bin(five, "cpu") == 2           # a CPU budget does not (every species lost at bin 1)
    assert auto_bin([15.9], "cuda") == 1
    assert auto_bin([7.9], "cpu") == 1
    assert auto_bin([7.9, 10, 11.9], "cpu") == 1      # small particles alone stay at full resolution
    assert auto_bin([18, 13, 9, 18, 6], "cpu") == 2   # one small class does not hold the rest at bin 1
    assert auto_bin([18, 13, 9, 18, 6], "cuda") == 1


def test_automatic_patch_holds_the_largest_particle(tmp_path):
    from picker3d.engine.train import auto_batch, auto_patch, load_model, train
    assert auto_patch([12.5, 8.5, 6, 12, 4]) == (32, 8)       # the simulator's species at bin 2
    assert auto_patch([25, 17, 12, 24, 8]) == (40, 4)         # ... at bin 1: 25 + 8 voxels need 40
    assert auto_patch([30], sparse=True) == (48, 4)
    # an explicit patch without a batch follows the same rule as the automatic one
    assert (auto_batch(24), auto_batch(32), auto_batch(40), auto_batch(32, sparse=True)) == (8, 8, 4, 4)
    # train() without patch and batch uses the rule, says so and records it
    vol, tab = _small_dataset(31)
    lines = []
    out = str(tmp_path / "m.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, epochs=1, iters_per_epoch=1, tile=32, pad=4,
          channels=(4, 8), bin=2, log=lines.append)
    assert "patches 32³ in batches of 8" in lines
    assert load_model(out)[1]["patch"] == 32 and load_model(out)[1]["batch"] == 8
    assert load_model(out)[1]["lr"] == 3e-3          # no lr given: the complete-label default
    assert load_model(out)[1]["rotation"] == 20.0    # ... and rotation
    # resuming keeps the interrupted run's patches; a checkpoint from before the automatic
    # choice has none recorded, and those runs used 48 x 4
    ck = torch.load(out + ".ckpt", weights_only=False)
    assert (ck["patch"], ck["batch"]) == (32, 8)
    del ck["patch"], ck["batch"]
    torch.save(ck, out + ".ckpt")
    lines.clear()
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, epochs=2, iters_per_epoch=1, tile=32, pad=4,
          channels=(4, 8), bin=2, log=lines.append, resume=True)
    assert "patches 48³ in batches of 4 (as the interrupted run)" in lines
    assert load_model(out)[1]["patch"] == 48


def test_weight_average_follows_the_ramped_decay():
    from picker3d.engine.train import WeightAverage
    torch.manual_seed(0)
    net = ResUNet3D(1, channels=(4, 8, 8, 8))
    avg = WeightAverage(net, decay=0.99)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    avg.update(net, step=0)            # decay ramps: min(0.99, 1/10) = 0.1
    for name, p in net.named_parameters():
        expected = 0.1 * start[name] + 0.9 * p
        assert torch.allclose(avg.state_dict()[name], expected, atol=1e-6), name
    for step in range(1, 2000):        # the ramp ends at 0.99; the average converges to the weights
        avg.update(net, step)
    name, p = next(iter(net.named_parameters()))
    assert torch.allclose(avg.state_dict()[name], p, atol=1e-5)
    assert not any(q.requires_grad for q in avg.model.parameters())


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
    from picker3d.engine.pick import pick_tomogram
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


def test_read_binned_equals_binning_the_volume(tmp_path):
    from picker3d.engine.mrcio import read_binned, read_volume, write_volume
    from picker3d.engine.volume import bin_volume
    vol = np.random.default_rng(3).standard_normal((21, 30, 34)).astype(np.float32)
    write_volume(str(tmp_path / "v.mrc"), vol, 7.5)
    binned, vs, shape = read_binned(str(tmp_path / "v.mrc"), 2, chunk_bytes=1)   # a plane pair at a time
    assert vs == pytest.approx(7.5) and shape == vol.shape
    np.testing.assert_allclose(binned, bin_volume(read_volume(str(tmp_path / "v.mrc"))[0], 2), atol=1e-6)


def test_hold_out_keeps_labels_drawn_before_the_cut():
    from picker3d.engine.train import TomogramData, hold_out
    vol = np.random.default_rng(0).normal(size=(16, 40, 80)).astype(np.float32)
    xs = [10, 58, 61, 75]
    table = CoordTable(np.array([[x, 20, 8] for x in xs], float), ["a"] * 4)
    d = TomogramData(vol, table, ["a"], {"a": 8.0})
    before, volume = d.labels.copy(), d.volume.copy()
    val_volume, val_table = hold_out(d, 0.25, 4.0)
    # the far quarter of x (the longer in-plane axis) is held out
    assert d.volume.shape == (16, 40, 60) and val_volume.shape == (16, 40, 20)
    np.testing.assert_array_equal(d.volume, volume[..., :60])
    np.testing.assert_array_equal(val_volume, volume[..., 60:])
    # the particle centred at x = 61 still marks its voxels left of the cut (no false background)
    np.testing.assert_array_equal(d.labels, before[..., :60])
    assert d.labels[8, 20, 58] == 1 and d.labels[8, 20, 59] == 1
    assert d.table.xyz[:, 0].tolist() == [10, 58] and d.cls.tolist() == [1, 1]
    # validation: particles centred beyond the cut, and those reaching it, in the part's frame
    assert val_table.xyz[:, 0].tolist() == [-2, 1, 15]
    assert (d.negatives[:, 2] < 60).all()
    # too narrow to hold a part out
    small = TomogramData(vol[:, :20, :24], CoordTable(np.array([[5.0, 10, 8]]), ["a"]), ["a"], {"a": 8.0})
    assert hold_out(small, 0.25, 4.0) is None


def test_calibration_gives_a_class_without_validation_particles_the_median_threshold():
    from picker3d.engine.train import calibrate
    probs = np.zeros((3, 24, 24, 24), np.float32)
    probs[0] = 1.0
    for (z, y, x) in [(6, 6, 6), (6, 17, 17)]:
        probs[0, z - 2:z + 3, y - 2:y + 3, x - 2:x + 3] = 0.05
        probs[1, z - 2:z + 3, y - 2:y + 3, x - 2:x + 3] = 0.95
    probs[0, 15:20, 4:9, 4:9], probs[1, 15:20, 4:9, 4:9] = 0.55, 0.45      # a weaker false "a"
    ref = CoordTable(np.array([[6.0, 6, 6], [17.0, 17, 6]]), ["a", "a"])
    thr, f1, _ = calibrate([probs], [ref], ["a", "b"], {"a": 5.0, "b": 5.0})
    assert f1 == 1.0 and thr["class"]["a"] > 0.2     # above the weaker false one
    # every grid value between the false pick's score and the true ones' ties at F1 1: the
    # highest is kept (the lowest, kept before, let through crowders on unseen tomograms)
    from picker3d.engine.pick import find_particles
    from picker3d.engine.train import THRESHOLD_GRID
    picks = find_particles(probs, ["a", "b"], {"a": 5.0, "b": 5.0}, t_seg=thr["t_seg"], t_lm=0.05, smooth=0.25)
    true_low = min(s for p, s in zip(picks.xyz, picks.scores) if abs(p[2] - 6) < 1)     # z 6: the true ones
    assert thr["class"]["a"] == max(g for g in THRESHOLD_GRID if g <= true_low) and len(picks) == 3
    # "b" has no validation particle: not the permissive first grid value, the others' median
    assert thr["class"]["b"] == thr["class"]["a"]


def test_normalisation_ignores_gold_beads_and_constant_bands():
    from picker3d.engine.volume import normalize, volume_stats
    rng = np.random.default_rng(0)
    clean = rng.normal(3.0, 2.0, size=(40, 64, 64)).astype(np.float32)
    mean, std = volume_stats(clean)
    assert mean == pytest.approx(3.0, abs=0.02) and std == pytest.approx(2.0, rel=0.01)   # plain estimate kept
    bad = clean.copy()
    gold = rng.choice(bad.size, bad.size // 500, replace=False)                      # 0.2 % of the voxels
    bad.reshape(-1)[gold] = rng.normal(-60.0, 5.0, size=len(gold))
    bad[:, :, :4] = 40.0                                                              # a constant band
    plain_std = float(bad.std())
    assert plain_std > 2.5 * std                       # what the plain estimate would have used
    mean_b, std_b = volume_stats(bad)
    assert mean_b == pytest.approx(3.0, abs=0.1) and std_b == pytest.approx(2.0, rel=0.06)
    z = normalize(bad)
    assert z.dtype == np.float32 and np.median(z[:, :, 4:]) == pytest.approx(0.0, abs=0.05)
    assert z.min() == pytest.approx(-3.0) and z.max() == pytest.approx(3.0)          # gold and band clipped
    assert np.array_equal(normalize(clean), np.clip((clean - mean) / (std + 1e-6), -3, 3))
    assert volume_stats(np.full((8, 8, 8), 5.0)) == (5.0, 0.0)                        # constant volume: no crash


def test_binning_phase_copies_put_each_particle_where_its_shifted_grid_sees_it():
    from picker3d.engine.train import binning_phase_copies
    # one bright blob off every axis's centre (x, y, z differ so a swapped axis shows)
    z, y, x = np.mgrid[:32, :40, :48].astype(np.float32)
    xyz = np.array([[29.0, 17.0, 11.0]])
    vol = np.exp(-((x - xyz[0, 0]) ** 2 + (y - xyz[0, 1]) ** 2 + (z - xyz[0, 2]) ** 2) / (2 * 2.0 ** 2))
    table = CoordTable(xyz, ["a"])
    copies = binning_phase_copies([vol], [table], 2, ["a"], {"a": 5.0}, "ball", 0.0, 4.0)
    assert len(copies) == 7                    # offsets 0 or 1 per axis, all but (0, 0, 0)
    shapes = set()
    for d in copies:
        w = np.clip(d.volume - np.median(d.volume), 0, None) ** 2
        centroid = np.array([(w * g).sum() / w.sum() for g in np.indices(w.shape)])[::-1]   # x, y, z
        assert np.abs(centroid - d.table.xyz[0]).max() < 0.1, (d.name, centroid, d.table.xyz[0])
        assert d.labels[tuple(np.round(d.table.xyz[0][::-1]).astype(int))] == 1
        shapes.add(d.volume.shape)
    # a shifted grid loses the last block on the shifted axes
    assert shapes == {(a, b, c) for a in (16, 15) for b in (20, 19) for c in (24, 23)} - {(16, 20, 24)}


def test_binning_phase_copies_hold_out_the_part_the_unshifted_grid_holds_out():
    from picker3d.engine.train import binning_phase_copies, holdout_split
    vol = np.random.default_rng(1).normal(size=(16, 40, 40)).astype(np.float32)     # square in-plane
    table = CoordTable(np.array([[6.0, 20, 8], [33.0, 20, 8]]), ["a", "a"])
    ax, cut = holdout_split((8, 20, 20), 0.25)
    assert (ax, cut) == (2, 15)                                  # x, binned voxels 15-19 held out
    copies = binning_phase_copies([vol], [table], 2, ["a"], {"a": 4.0}, "ball", 0.25, 4.0)
    for d in copies:
        ox = 1 if d.name.endswith(", 1)") else 0                # the copy's grid offset along x
        # cut along x like the unshifted grid (a shifted y alone would make y the longer axis)
        # and never reaching into original voxel 2 * cut = 30, where the held-out part begins
        assert d.volume.shape[2] == cut - ox and ox + 2 * d.volume.shape[2] <= 2 * cut, d.name
        assert d.volume.shape[1] in (20, 19)
        assert d.table.xyz[:, 0].max() < d.volume.shape[2] and len(d.table) == 1      # x = 33 held out


def test_label_diameters_grow_to_the_minimum_but_not_past_the_cap(tmp_path):
    """The benchmark's classes at bin 2: --min-mask 9 grows barrel and shell to 9; the cap of
    1.5x stops the 4-voxel tiny at 6 (9 without the cap); a bad ratio is named."""
    from picker3d.engine.errors import InputError
    from picker3d.engine.train import label_diameters, train
    binned = {"large": 12.5, "barrel": 8.5, "shell": 6.0, "rod": 12.0, "tiny": 4.0}
    assert label_diameters(binned, 9.0, 1.5) == {"large": 12.5, "barrel": 9.0, "shell": 9.0, "rod": 12.0,
                                                 "tiny": 6.0}
    assert label_diameters(binned, 9.0, 0)["tiny"] == 9.0
    assert label_diameters(binned, 3.0, 1.5) == binned
    vol, tab = _small_dataset(10)
    with pytest.raises(InputError, match=r"--max-mask-ratio: 0.5 must be 1 or more"):
        train([vol], [tab], ["barrel"], {"barrel": 17}, str(tmp_path / "m.pt"), max_mask_ratio=0.5,
              log=lambda m: None)

"""Training runs end to end: a short training picks, binned training, refused inputs, calibration."""
import os

import numpy as np
import pytest
import torch
from engine_data import small_dataset

from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate


def test_short_training_picks_large_particles(tmp_path):
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.picking.tomogram import pick_tomogram
    from picker3d.engine.training import train
    torch.set_num_threads(2)
    vol, tab = small_dataset(10)
    test_vol, test_tab = small_dataset(12)
    out = str(tmp_path / "m.pt")
    lines = []
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, [vol], [tab], epochs=4, iters_per_epoch=10,
          patch=32, batch=2, tile=64, pad=8, seed=0, lr=5e-3, log=lines.append, bin=1)
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


def test_binned_training_picks_in_original_voxels(tmp_path):
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.picking.tomogram import pick_tomogram
    from picker3d.engine.training import train
    torch.set_num_threads(2)
    vol, tab = small_dataset(50)
    test_vol, test_tab = small_dataset(52)
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


def test_class_without_annotation_is_refused(tmp_path):
    from picker3d.engine.errors import InputError
    from picker3d.engine.training import train
    vol, tab = small_dataset(40)
    with pytest.raises(InputError, match="class\\(es\\) rod have no annotation"):
        train([vol], [tab], ["barrel", "rod"], {"barrel": 17, "rod": 20}, str(tmp_path / "m.pt"), epochs=1, bin=1)
    assert not os.path.exists(tmp_path / "m.pt")


def test_calibration_gives_a_class_without_validation_particles_the_median_threshold():
    from picker3d.engine.training.calibration import calibrate
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
    from picker3d.engine.picking.peaks import find_particles
    from picker3d.engine.training.calibration import THRESHOLD_GRID
    picks = find_particles(probs, ["a", "b"], {"a": 5.0, "b": 5.0}, t_seg=thr["t_seg"], t_lm=0.05, smooth=0.25)
    true_low = min(s for p, s in zip(picks.xyz, picks.scores) if abs(p[2] - 6) < 1)     # z 6: the true ones
    assert thr["class"]["a"] == max(g for g in THRESHOLD_GRID if g <= true_low) and len(picks) == 3
    # "b" has no validation particle: not the permissive first grid value, the others' median
    assert thr["class"]["b"] == thr["class"]["a"]

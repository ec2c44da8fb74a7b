"""Sparse-label (positive-unlabeled) training."""
import math
import os

import numpy as np
import pytest
import torch

from picker3d.engine.errors import InputError
from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate
from picker3d.engine.pu import (
    centre_heatmaps,
    check_prior,
    positive_voxels_per_particle,
    prior_from_count,
    pu_loss,
    pu_risks,
)


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_pu_loss_equals_hand_computed_value_on_four_voxels():
    # voxel 0: annotated centre (tp), voxel 1: soft positive y = 0.5, voxels 2-3: unlabeled
    logits = torch.tensor([0.5, -1.0, -2.0, 0.3]).reshape(1, 1, 1, 1, 4)
    heat = torch.tensor([1.0, 0.5, 0.0, 0.0]).reshape(1, 1, 1, 1, 4)
    prior, a, b = 0.1, 2.0, 4.0
    p0, p1, p2, p3 = (_sig(v) for v in (0.5, -1.0, -2.0, 0.3))
    r_tp_pos = -(1 - p0) ** a * math.log(p0)
    r_sp_pos = -(1 - 0.5) ** b * p1 ** a * math.log(1 - p1)
    r_tp_neg = -p0 ** a * math.log(1 - p0)
    r_sp_neg = -(0.5 ** b) * (1 - p1) ** a * math.log(p1)
    r_u_neg = (-p2 ** a * math.log(1 - p2) - p3 ** a * math.log(1 - p3)) / 2
    expected = prior * (0.5 * r_tp_pos + 0.5 * r_sp_pos) + max(0.0, r_u_neg - prior * (0.5 * r_tp_neg + 0.5 * r_sp_neg))
    assert float(pu_loss(logits, heat, prior)) == pytest.approx(expected, rel=1e-5)


def test_correction_weights_centres_and_neighbourhood_by_their_voxels():
    # one centre, three soft positives, four unlabeled voxels: the positive risk weighs the
    # centre 1/2 (TP_SHARE), the subtracted pi_p R_p- by voxels (1/4 centre, 3/4 neighbourhood)
    logits = torch.tensor([4.0, 0.2, -0.5, 1.0, -2.0, 0.3, -1.0, 0.8]).reshape(1, 1, 1, 1, 8)
    heat = torch.tensor([1.0, 0.5, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0]).reshape(1, 1, 1, 1, 8)
    prior = 0.05
    r_tp_pos, r_sp_pos, r_tp_neg, r_sp_neg, r_u_neg, vox_tp, vox_sp = (float(t) for t in pu_risks(logits, heat))
    assert (vox_tp, vox_sp) == (0.25, 0.75)
    positive = prior * (0.5 * r_tp_pos + 0.5 * r_sp_pos)
    by_voxels = positive + max(0.0, r_u_neg - prior * (0.25 * r_tp_neg + 0.75 * r_sp_neg))
    as_positive = positive + max(0.0, r_u_neg - prior * (0.5 * r_tp_neg + 0.5 * r_sp_neg))
    assert float(pu_loss(logits, heat, prior)) == pytest.approx(by_voxels, rel=1e-5)
    assert float(pu_loss(logits, heat, prior, correction_share="same")) == pytest.approx(as_positive, rel=1e-5)
    assert abs(by_voxels - as_positive) > 1e-4            # the toy tells the two apart
    with pytest.raises(ValueError, match="correction_share"):
        pu_loss(logits, heat, prior, correction_share="half")


def test_non_negative_clamp_engages_when_unlabeled_risk_is_small():
    # unlabeled voxels confidently negative, annotated centre confidently positive:
    # R_u- < pi_p R_p-, so the negative part is clamped to 0
    logits = torch.tensor([3.0, -12.0, -12.0, -12.0]).reshape(1, 1, 1, 1, 4).requires_grad_(True)
    heat = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 1, 1, 4)
    prior = 0.2
    r_tp_pos, _, r_tp_neg, _, r_u_neg, pi_tp, _ = pu_risks(logits, heat)
    assert float(r_u_neg.detach()) < prior * float(r_tp_neg.detach())
    loss = pu_loss(logits, heat, prior)
    assert float(loss.detach()) == pytest.approx(prior * float(r_tp_pos.detach()), rel=1e-6)   # only the positive risk
    loss.backward()
    assert torch.all(logits.grad[..., 1:] == 0)          # no push on the unlabeled voxels
    # the unclamped (unbiased) estimator is lower, i.e. it went negative
    assert float(pu_loss(logits.detach(), heat, prior, non_negative=False)) < float(loss.detach())


def test_heatmap_targets_and_prior_helpers():
    tab = CoordTable([[10.3, 12.0, 8.6], [20, 20, 20]], ["a", "b"])
    heat = centre_heatmaps((32, 32, 32), tab, ["a", "b"], {"a": 12, "b": 6})
    assert heat.shape == (2, 32, 32, 32)
    assert heat[0, 9, 12, 10] == 1.0 and heat[1, 20, 20, 20] == 1.0    # centres (z, y, x) exactly 1
    assert heat[0, 20, 20, 20] < 0.01 and heat[1, 9, 12, 10] < 0.01    # classes apart
    n = positive_voxels_per_particle(12)
    assert abs(n - 4 / 3 * math.pi * (0.506 * 12) ** 3) / n < 0.15     # ball of radius ~d/2
    assert prior_from_count(10, 12, (64, 64, 64)) == pytest.approx(10 * n / 64 ** 3)
    # a prior below what the annotations already cover is flagged; a sensible one is not
    labelled = float((heat.max(axis=0) > 0.01).mean())
    assert "below" in check_prior(labelled / 2, heat.max(axis=0))
    assert check_prior(labelled * 5, heat.max(axis=0)) is None
    assert "50x" in check_prior(labelled * 100, heat.max(axis=0))
    # two classes annotated alike: the total prior is split so that each keeps the same particle
    # count, each class's share in voxels that of its particles' size
    from picker3d.engine.pu import class_priors, prior_from_counts
    total = prior_from_counts(20, [tab], ["a", "b"], {"a": 12, "b": 6}, (64, 64, 64))
    pa, pb = class_priors(total, [tab], ["a", "b"], {"a": 12, "b": 6})
    assert pa + pb == pytest.approx(total)
    assert pa / positive_voxels_per_particle(12) == pytest.approx(pb / positive_voxels_per_particle(6))
    assert pa == pytest.approx(prior_from_count(10, 12, (64, 64, 64)))


def test_sparse_training_needs_a_prior(tmp_path):
    from picker3d.engine.training import train
    vol = np.random.default_rng(0).standard_normal((32, 32, 32)).astype(np.float32)
    tab = CoordTable([[16, 16, 16]], ["a"])
    with pytest.raises(InputError, match="--prior"):
        train([vol], [tab], ["a"], {"a": 8}, str(tmp_path / "m.pt"), labels="sparse", epochs=1, bin=1)
    with pytest.raises(InputError, match="--labels sparse"):
        train([vol], [tab], ["a"], {"a": 8}, str(tmp_path / "m.pt"), loss="pu", epochs=1, bin=1)


def test_learning_rate_defaults_by_label_kind_and_parses_auto():
    from picker3d.engine.training.config import default_lr, float_or_auto
    assert default_lr(sparse=True) == 1e-3 and default_lr(sparse=False) == 3e-3   # the sparse-label paper §4.2 for sparse
    assert float_or_auto("auto", "--lr") is None and float_or_auto("2e-3", "--lr") == 2e-3
    for bad in ("fast", "0", "-1e-3"):
        with pytest.raises(InputError, match="--lr"):
            float_or_auto(bad, "--lr")


def test_consistency_view_flips_back_exactly():
    from picker3d.engine.training.losses import consistency_loss, consistency_view
    rng = np.random.default_rng(3)
    x = torch.randn(2, 1, 8, 10, 12)
    for _ in range(8):
        view, dims = consistency_view(x, rng)
        assert view.shape == x.shape and dims and set(dims) <= {3, 4}      # mirrors in y / x only
        logits = torch.randn(2, 3, 8, 10, 12)
        for sparse in (True, False):
            # a network that mirrors its output with its input is perfectly consistent
            assert float(consistency_loss(logits, torch.flip(logits, dims), dims, sparse)) == pytest.approx(0.0, abs=1e-7)
            assert float(consistency_loss(logits, logits + 1.0 * (torch.rand_like(logits) > 0.5), dims, sparse)) > 1e-3
    vol = rng.standard_normal((32, 32, 32)).astype(np.float32)
    from picker3d.engine.training import train
    with pytest.raises(InputError, match="--consistency"):
        train([vol], [CoordTable([[16, 16, 16]], ["a"])], ["a"], {"a": 8}, "unused.pt", consistency=-1, epochs=1, bin=1)


def test_slice_network_options_are_checked(tmp_path):
    """--network and --patch-depth: bad values and a resume with the other network are
    one-line errors naming the flag; slabs of the slice network are sampled thin."""
    from picker3d.engine.training import train
    from picker3d.engine.training.config import auto_batch
    from picker3d.engine.training.data import TomogramData, sample_batch
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((32, 32, 32)).astype(np.float32)
    table = CoordTable([[16, 16, 16]], ["a"])
    kw = dict(epochs=1, iters_per_epoch=1, patch=16, batch=1, tile=32, pad=4, log=lambda m: None)
    with pytest.raises(InputError, match="--network"):
        train([vol], [table], ["a"], {"a": 8}, str(tmp_path / "x.pt"), network="vit", **kw, bin=1)
    with pytest.raises(InputError, match="--patch-depth"):
        train([vol], [table], ["a"], {"a": 8}, str(tmp_path / "x.pt"), patch_depth=12, **kw, bin=1)
    with pytest.raises(InputError, match="--rotation"):
        train([vol], [table], ["a"], {"a": 8}, str(tmp_path / "x.pt"), rotation=270, **kw, bin=1)
    with pytest.raises(InputError, match="--contrastive.*sparse"):
        train([vol], [table], ["a"], {"a": 8}, str(tmp_path / "x.pt"), contrastive=0.1, **kw, bin=1)
    out = str(tmp_path / "m.pt")
    train([vol], [table], ["a"], {"a": 8}, out, network="slice2d", patch_depth=4, **kw, bin=1)
    with pytest.raises(InputError, match="--network.*slice2d"):
        train([vol], [table], ["a"], {"a": 8}, out, resume=True, **dict(kw, epochs=2), bin=1)
    assert auto_batch(48, sparse=True, depth=16) == 12 and auto_batch(48, sparse=True) == 4
    data = [TomogramData(vol, table, ["a"], {"a": 8.0}, sparse=True)]
    x, y, offs, _ = sample_batch(data, rng, (4, 16, 16), 3, 1)
    assert x.shape == (3, 1, 4, 16, 16) and y.shape == (3, 1, 4, 16, 16)
    assert all(0 <= o[0] <= 28 and 0 <= o[1] <= 16 for o in offs)      # inside the volume


def test_sparse_training_finds_unannotated_particles(tmp_path):
    """A third of the particles annotated; the picks recover the others."""
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.picking.tomogram import pick_tomogram
    from picker3d.engine.simulation.dataset import simulate_tomogram
    from picker3d.engine.training import train
    torch.set_num_threads(2)
    s = simulate_tomogram(shape=(64, 96, 96), seed=21, snr=2.0, species=["barrel"], counts={"barrel": 18},
                          crowders=0, vesicles=0, membranes=0, gold=0)
    full = CoordTable.from_rows(s["rows"])
    annotated = full.subset(np.arange(0, len(full), 3))
    hidden = full.subset([i for i in range(len(full)) if i % 3])
    out = str(tmp_path / "pu.pt")
    train([s["tomogram"]], [annotated], ["barrel"], {"barrel": 17}, out, [s["tomogram"]], [full], epochs=5,
          iters_per_epoch=12, patch=32, batch=2, tile=64, pad=8, seed=0, lr=5e-3, log=lambda m: None,
          labels="sparse", expected_particles=len(full), consistency=0.1, contrastive=0.1, bin=1)
    model, meta = load_model(out)
    assert meta["labels"] == "sparse" and meta["loss"] == "pu" and 0 < meta["prior"] < 0.2
    assert meta["consistency"] == 0.1 and meta["contrastive"] == 0.1
    assert meta["rotation"] == 180.0          # sparse labels: any in-plane angle by default
    picked, _ = pick_tomogram(model, meta, s["tomogram"])
    r = evaluate(picked, hidden, {"barrel": 17})
    assert r["recall"] >= 0.7, r        # particles nobody annotated are found


def test_contrastive_loss_matches_the_debiased_formula_by_hand():
    """The sparse-label paper's Eq. 8-13 with Chuang et al.'s debiased negatives, recomputed in numpy on a batch
    of six voxels: two annotated centres, four unlabeled (all sampled)."""
    from picker3d.engine.pu import contrastive_loss
    rng = np.random.default_rng(0)
    t, prior, lam2 = 0.5, 0.2, 0.5
    f, fv = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    heat = np.array([1.0, 1.0, 0.3, 0.0, 0.0, 0.0])
    prob = np.array([0.9, 0.8, 0.6, 0.1, 0.2, 0.05])

    def vol(a):     # (6, D) -> (1, D, 1, 1, 6)
        return torch.tensor(a.T[None, :, None, None, :], dtype=torch.float64)

    got = float(contrastive_loss(vol(f), vol(fv), vol(heat[:, None]), vol(prob[:, None]), [prior],
                                 temperature=t, unsup_weight=lam2))
    def n(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    f, fv = n(f), n(fv)
    floor = np.exp(-1 / t)

    def term(pos, neg, tau):
        return -np.log(pos / (pos + max((neg - tau * pos) / (1 - tau), floor)))

    P = np.concatenate([f[:2], fv[:2]])             # anchors and positives: the centres, both views
    U = np.concatenate([f[2:], fv[2:]])             # negatives: the unlabeled voxels, both views
    sup = np.mean([term(np.mean([np.exp(P[i] @ P[j] / t) for j in range(4) if j != i]),
                        np.mean(np.exp(U @ P[i] / t)), prior) for i in range(4)])
    w = np.concatenate([prob[2:], prob[2:]])
    uns = []
    for k in range(8):
        pair = (k + 4) % 8
        pos = np.exp(U[k] @ U[pair] / t)
        neg = np.mean([np.exp(U[k] @ U[m] / t) for m in range(8) if m not in (k, pair)])
        uns.append(w[k] * term(pos, neg, prior) + (1 - w[k]) * term(pos, neg, 1 - prior))
    assert got == pytest.approx(sup + lam2 * np.mean(uns), rel=1e-9)


def test_contrastive_loss_rewards_centres_that_look_alike():
    from picker3d.engine.pu import contrastive_loss
    rng = np.random.default_rng(1)
    heat = torch.zeros(1, 1, 4, 8, 8)
    heat[0, 0, 1, 2, 2] = heat[0, 0, 2, 5, 6] = heat[0, 0, 3, 1, 7] = 1.0
    probs = torch.full_like(heat, 0.1)
    noise, view = (torch.tensor(rng.normal(size=(1, 8, 4, 8, 8)), dtype=torch.float32) for _ in range(2))
    alike, alike_view = noise.clone(), view.clone()
    for a in (alike, alike_view):
        a[:, :, heat[0, 0] == 1] = torch.ones(8, 1) * 3.0      # centres share one feature vector
    kw = dict(unsup_weight=0.0, generator=torch.Generator().manual_seed(0))
    assert float(contrastive_loss(alike, alike_view, heat, probs, [0.01], **kw)) < \
        0.1 * float(contrastive_loss(noise, view, heat, probs, [0.01], **kw))


def test_contrastive_loss_projects_only_what_it_uses_with_the_same_result():
    """The projection head applied to the sampled voxels inside the loss gives the loss of the
    projected whole maps (a per-voxel linear map commutes with picking voxels)."""
    from picker3d.engine.pu import contrastive_loss
    torch.manual_seed(0)
    proj = torch.nn.Linear(8, 32)
    f, fv = torch.randn(2, 8, 6, 10, 10), torch.randn(2, 8, 6, 10, 10)
    heat = torch.zeros(2, 1, 6, 10, 10)
    heat[0, 0, 2, 3, 4] = heat[1, 0, 4, 5, 6] = heat[1, 0, 1, 1, 1] = 1.0
    probs = torch.rand_like(heat)

    def whole(t):
        return proj(t.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    with torch.no_grad():
        a = contrastive_loss(whole(f), whole(fv), heat, probs, [0.02], generator=torch.Generator().manual_seed(1))
        b = contrastive_loss(f, fv, heat, probs, [0.02], generator=torch.Generator().manual_seed(1), projection=proj)
    assert float(b) == pytest.approx(float(a), rel=1e-5)


def test_sparse_validation_or_none_gives_count_thresholds(tmp_path, capsys):
    """Sparse validation coordinates (2 of 10) and no validation at all: a model with
    thresholds either way; a sparse validation set naming an untrained class: one line."""
    from engine_data import small_dataset

    from picker3d.engine.cli import main
    from picker3d.engine.formats.mrc import write_volume
    from picker3d.engine.formats.writers import write_table
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.training import train
    vol, tab = small_dataset(43)
    val, vtab = small_dataset(44)
    kw = dict(labels="sparse", expected_particles=10, epochs=2, iters_per_epoch=2, patch=32, batch=2, tile=64, pad=8,
              bin=1, seed=0)
    lines = []
    for name, vv, vt in (("sparse", [val], [vtab.subset([0, 1])]), ("none", [], [])):
        train([vol], [tab.subset([0, 1, 2])], ["barrel"], {"barrel": 17}, str(tmp_path / f"{name}.pt"), vv, vt,
              log=lines.append, **kw)
        meta = load_model(str(tmp_path / f"{name}.pt"))[1]
        assert meta["val_labels"] == name
        assert set(meta["thresholds"]["class"]) == {"barrel"} and 0 < meta["thresholds"]["class"]["barrel"] < 1
    assert any("taken as sparse annotation" in ln for ln in lines), lines
    # the fully annotated validation tomogram is told apart by its count: F1 calibration
    train([vol], [tab.subset([0, 1, 2])], ["barrel"], {"barrel": 17}, str(tmp_path / "full.pt"), [val], [vtab],
          log=lambda m: None, **kw)
    assert load_model(str(tmp_path / "full.pt"))[1]["val_labels"] == "complete"
    # a sparse validation set naming a class the model is not trained on
    write_volume(tmp_path / "t.mrc", vol, 10.0)
    write_volume(tmp_path / "v.mrc", val, 10.0)
    write_table(tmp_path / "t.tsv", tab.subset([0, 1, 2]))
    other = vtab.subset([0, 1])
    other.classes = np.asarray(["barrel", "ribosome"], dtype=object)
    write_table(tmp_path / "v.tsv", other)
    rc = main(["train", "--tomograms", str(tmp_path / "t.mrc"), "--coords", str(tmp_path / "t.tsv"),
               "--val-tomograms", str(tmp_path / "v.mrc"), "--val-coords", str(tmp_path / "v.tsv"),
               "--diameters", "barrel=17", "--labels", "sparse", "--expected-particles", "10", "--epochs", "1",
               "--out", str(tmp_path / "bad.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--val-coords: class(es) ribosome" in err[0], err
    assert not os.path.exists(tmp_path / "bad.pt")

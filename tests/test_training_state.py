"""Training state: schedule, weight average, checkpoint resume, fine-tuning."""
import os

import numpy as np
import pytest
import torch
from engine_data import small_dataset

from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate
from picker3d.engine.network import ResUNet3D


def test_one_cycle_schedule_shape():
    from picker3d.engine.training.state import one_cycle_lr
    assert one_cycle_lr(0.0, 1.0) == pytest.approx(1 / 25)
    assert one_cycle_lr(0.2, 1.0) == pytest.approx(1.0)
    assert one_cycle_lr(1.0, 1.0) == pytest.approx(1e-4)
    assert one_cycle_lr(2.0, 1.0) == pytest.approx(1e-4)   # past a time budget: stays at the floor
    lrs = [one_cycle_lr(f, 1.0) for f in np.linspace(0.2, 1, 20)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_average_follows_the_ramped_decay():
    from picker3d.engine.training.state import WeightAverage
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


def test_resume_gives_the_same_model(tmp_path):
    from picker3d.engine.training import train
    torch.set_num_threads(2)
    vol, tab = small_dataset(20)
    kw = dict(epochs=3, iters_per_epoch=3, patch=24, batch=2, tile=32, pad=4, seed=1, log=lambda m: None)
    a = str(tmp_path / "a.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, a, **kw, bin=1)
    b = str(tmp_path / "b.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, b, stop_after_epoch=1, **kw, bin=1)   # "killed" after epoch 1
    train([vol], [tab], ["barrel"], {"barrel": 17}, b, resume=True, **kw, bin=1)
    sa = torch.load(a + ".ckpt", weights_only=False)["model"]
    sb = torch.load(b + ".ckpt", weights_only=False)["model"]
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k


def test_resume_keeps_the_interrupted_runs_binning_grids(tmp_path):
    """A run started with --no-bin-phases and resumed without the flag stays on one grid."""
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.training import train
    vol, tab = small_dataset(33)
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
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.picking.tomogram import pick_tomogram
    from picker3d.engine.training import train
    torch.set_num_threads(2)
    vol, tab = small_dataset(10)
    test_vol, test_tab = small_dataset(12)
    src = str(tmp_path / "src.pt")
    kw = dict(patch=32, batch=2, tile=64, pad=8, seed=0, log=lambda m: None)
    train([vol], [tab], ["barrel"], {"barrel": 17}, src, [vol], [tab], epochs=4, iters_per_epoch=10, lr=5e-3, **kw, bin=1)
    brief = dict(kw, epochs=1, iters_per_epoch=1, lr=1e-9)

    def f1(path):
        model, meta = load_model(path)
        return evaluate(pick_tomogram(model, meta, test_vol)[0], test_tab, {"barrel": 17})["f1"]
    lines = []
    tuned = str(tmp_path / "tuned.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, tuned, [vol], [tab], init=src, **dict(brief, log=lines.append), bin=1)
    scratch = str(tmp_path / "scratch.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, scratch, [vol], [tab], **brief, bin=1)
    assert f1(tuned) > 0.8 and f1(scratch) < 0.5, (f1(tuned), f1(scratch))
    assert any(m.startswith(f"starting from {src}") and "every layer kept" in m for m in lines), lines
    assert load_model(tuned)[1]["init"] == {"path": os.path.abspath(src), "classes": ["barrel"],
                                            "output_layer_kept": True}
    # an interrupted fine-tuning resumed: the model still records where it started
    resumed = str(tmp_path / "resumed.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, resumed, init=src, stop_after_epoch=1,
          **dict(brief, epochs=2), bin=1)
    train([vol], [tab], ["barrel"], {"barrel": 17}, resumed, init=src, resume=True, **dict(brief, epochs=2), bin=1)
    assert load_model(resumed)[1]["init"]["path"] == os.path.abspath(src)
    # another class name: every layer but the output one comes from the source
    other = str(tmp_path / "other.pt")
    tab_b = CoordTable(tab.xyz, ["cage"] * len(tab))
    train([vol], [tab_b], ["cage"], {"cage": 17}, other, init=src, **brief, bin=1)
    # weights (batch-norm running statistics move with any step, whatever the rate)
    s_src, s_other = (dict(load_model(p)[0].named_parameters()) for p in (src, other))
    assert load_model(other)[1]["init"]["output_layer_kept"] is False
    for k in s_src:
        same = torch.allclose(s_src[k].float(), s_other[k].float(), atol=1e-5)
        assert same != k.startswith("head."), k
    with pytest.raises(InputError, match=r"--init: .*src.pt was trained with --channels 8,16,24,36, this run uses 4,8"):
        train([vol], [tab], ["barrel"], {"barrel": 17}, str(tmp_path / "x.pt"), init=src, channels=(4, 8), **brief, bin=1)

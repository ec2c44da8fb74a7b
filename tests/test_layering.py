"""Which side imports what: the Scipion layer imports no torch, the engine no
Scipion. Each check runs in a fresh interpreter, so nothing imported by other tests hides a
dependency."""
import subprocess
import sys

import pytest

SCIPION_LAYER = ["picker3d", "picker3d.protocols", "picker3d.viewers", "picker3d.objects", "picker3d.wizards",
                 "picker3d.convert", "picker3d.workflow", "picker3d.plugin"]


def _run(code):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


@pytest.mark.parametrize("module", SCIPION_LAYER)
def test_scipion_layer_imports_with_torch_blocked(module):
    out = _run(f"import sys; sys.modules['torch'] = None\nimport {module}\n"
               "import picker3d; print(picker3d.Plugin.__name__)")
    assert out.endswith("Plugin")


def test_scipion_layer_reads_a_model_file_without_torch(tmp_path):
    """The model's classes, diameters and history come from its JSON sidecar."""
    import torch

    from picker3d.engine.modelfile import save_model
    from picker3d.engine.network import build_network
    net = build_network({"n_classes": 1, "channels": (8, 16, 24, 36)})
    path = str(tmp_path / "m.pt")
    save_model(path, net, {"classes": ["barrel"], "diameters": {"barrel": 17.0}, "voxel_size": 10.0, "bin": 2,
                           "thresholds": {"t_seg": 0.3, "class": {"barrel": 0.4}}, "best_val_f1": 0.8,
                           "history": [{"epoch": 1, "loss": 1.0, "val_f1": 0.8, "val_class_f1": 0.8}],
                           "patch": torch.tensor(48).item()})
    out = _run("import sys; sys.modules['torch'] = None\n"
               "from picker3d.engine.modelinfo import read_model_info, kept_entry\n"
               "from picker3d.objects import Picker3DModel\n"
               f"info = read_model_info({path!r}); m = Picker3DModel(filename={path!r}); m.setFromMeta(info)\n"
               "print(m.getClassNames(), m.getDiameters(), m.getBinning(), kept_entry(info['history'])['epoch'])")
    assert out == "['barrel'] {'barrel': 17.0} 2 1"


def test_engine_cli_imports_no_scipion():
    out = _run("import sys, picker3d.engine.cli, picker3d.engine.modelfile, picker3d.engine.training, "
               "picker3d.engine.picking, picker3d.engine.classification\n"
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pwem', 'pyworkflow', 'tomo')))")
    assert out == "[]"


def test_engine_command_prints_no_scipion_warnings(tmp_path):
    r = subprocess.run([sys.executable, "-m", "picker3d", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("picker3d "), r.stderr
    assert "SCIPION" not in r.stdout + r.stderr

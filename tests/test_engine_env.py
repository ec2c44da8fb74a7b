"""Two environments, as a real Scipion installation has them.

``scipion installb picker3d`` makes the engine environment picker3d-<version> (a venv here:
no conda on this machine) through ``Plugin.defineBinaries``; then the README's workflow runs
in a Scipion process that cannot import torch (a stand-in ``torch`` module that refuses to
load is first on its path, so any torch import on the Scipion side fails the run), and every
engine job runs in the engine environment, which holds no Scipion.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.scipion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the data are simulated in the engine environment (the simulator uses torch)
SIMULATE_SCRIPT = textwrap.dedent("""
    import os, sys
    from picker3d.engine.simulation.dataset import write_simulation
    write_simulation(os.path.join(sys.argv[1], "simulated"), n_tomograms=2, seed=70, shape=(48, 80, 80), snr=2.0,
                     species=["barrel"], counts={"barrel": 8}, crowders=0, vesicles=0, membranes=0, gold=0)
""")

WORKFLOW_SCRIPT = textwrap.dedent("""
    import os, shutil, sys
    assert "torch" not in sys.modules
    from picker3d.workflow import run_workflow, step, workflow_protocols, write_workflow
    base = sys.argv[1]
    sim = os.path.join(base, "simulated")
    os.makedirs(os.path.join(base, "annotations"))
    shutil.copy(os.path.join(sim, "tomo_00.tsv"), os.path.join(base, "annotations"))
    wf = workflow_protocols("./simulated", "./annotations", {"barrel": 17.0}, minutes=0.6, binning=1,
                            channels="8,16,24,36")
    step(wf, "ProtPicker3DTrain").update(patchSize=32, batchSize=2, iterationsPerEpoch=10, learningRate=5e-3)
    step(wf, "ProtPicker3DClassify").update(binning=1, kMax=4, iterations=2)
    path = write_workflow(os.path.join(base, "wf.json"), wf)
    proj, prots = run_workflow("picker3d_engine_env_test", path, location=os.path.join(base, "projects"),
                               log=print)
    from picker3d.engine.formats.readers import read_table
    from picker3d.engine.metrics import evaluate
    os.chdir(proj.getPath())
    r = evaluate(step(prots, "ProtPicker3DPick").getTable("tomo_01"), read_table(os.path.join(sim, "tomo_01.tsv")), {"barrel": 17.0})
    print("RESULT f1 %.3f picks %d classes %d" % (r["f1"], step(prots, "ProtPicker3DPick").coordinates.getSize(),
                                                  step(prots, "ProtPicker3DClassify").averages.getSize()))
    print("PROJECT " + proj.getPath())
    print("TORCH_IMPORTED " + str(sys.modules.get("torch") is not None))
""")

BLOCKED_TORCH = ('raise ModuleNotFoundError("No module named \'torch\' (blocked by picker3d\'s engine_env test: '
                 'Scipion\'s environment has no torch)", name="torch")\n')


def _scipion_env():
    env = dict(os.environ)
    env.pop("PICKER3D_ENV_ACTIVATION", None)       # the default: the installed engine environment
    return env


def test_engine_env_installb_then_the_workflow_runs_with_torch_only_in_the_engine(tmp_path):
    import pwem

    from picker3d import __version__
    from picker3d.engine_env import INSTALLED_MARKER, env_name, venv_python
    home = os.path.join(pwem.Config.EM_ROOT, env_name(__version__))
    # 1. Scipion's own install path makes the engine environment (kept between runs when complete)
    r = subprocess.run([sys.executable, "-m", "scipion", "installb", "picker3d"], env=_scipion_env(),
                       capture_output=True, text=True, timeout=1800, cwd=str(tmp_path))
    assert os.path.isfile(os.path.join(home, INSTALLED_MARKER)), r.stdout[-3000:] + r.stderr[-3000:]
    engine_python = venv_python(home)
    # the engine environment: torch and picker3d's engine, no Scipion
    probe = subprocess.run([engine_python, "-c", "import sys, torch, picker3d.engine.cli; "
                            "print([m for m in ('pwem', 'pyworkflow', 'tomo') if m in sys.modules]); "
                            "import importlib.util as u; print(u.find_spec('pwem') is None)"],
                           capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["[]", "True"], probe.stdout
    # 2. Scipion's side without torch: a module named torch that refuses to load comes first
    blocker = tmp_path / "no_torch"
    blocker.mkdir()
    (blocker / "torch.py").write_text(BLOCKED_TORCH)
    env = _scipion_env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "blocked" in check.stderr
    work = tmp_path / "run"
    work.mkdir()
    sim = subprocess.run([engine_python, "-c", SIMULATE_SCRIPT, str(work)], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]})
    assert sim.returncode == 0, sim.stderr[-3000:]
    r = subprocess.run([sys.executable, "-c", WORKFLOW_SCRIPT, str(work)], env=env, capture_output=True,
                       text=True, timeout=1500, cwd=str(work))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    result = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert result, r.stdout[-3000:]
    f1, picks, classes = float(result[0].split()[2]), int(result[0].split()[4]), int(result[0].split()[6])
    assert f1 > 0.6 and picks > 0 and classes >= 2, result
    assert "TORCH_IMPORTED False" in r.stdout
    # every engine job ran in the engine environment (the run logs show its activation)
    project = [ln.split(" ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("PROJECT ")][0]
    activation = os.path.join(home, "venv", "bin", "activate")
    logs = {}
    for run in os.listdir(os.path.join(project, "Runs")):
        log = os.path.join(project, "Runs", run, "logs", "run.stdout")
        if os.path.exists(log):
            with open(log) as fh:
                logs[run] = fh.read()
    for kind in ("ProtPicker3DMasks", "ProtPicker3DTrain", "ProtPicker3DPick", "ProtPicker3DClassify"):
        text = "".join(v for k, v in logs.items() if kind in k)
        assert f". {activation} && python -m picker3d" in text, (kind, text[-2000:])
    shutil.rmtree(project, ignore_errors=True)

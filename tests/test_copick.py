"""copick projects in and out, in the engine environment (numpy 2: copick needs it; Scipion's
environment pins numpy 1.26): the suite makes it itself through ``scipion installb picker3d``
(torch, the engine's requirements, copick, picker3d; no Scipion), builds a project offline with copick's own API from simulated tomograms, trains on it,
picks it, writes the picks back and reads them with copick."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def copick_env(tmp_path_factory):
    """The engine environment of 'scipion installb picker3d' (copick, numpy 2, no Scipion),
    checked: pip check clean, numpy 2, no Scipion module findable."""
    from engine_env_helper import installed_engine_env
    python, activation = installed_engine_env(tmp_path_factory.mktemp("installb"))
    clean = {"PATH": os.environ["PATH"]}
    _run([python, "-m", "pip", "check"], env=clean)
    probe = _run([python, "-c", "import numpy, copick, importlib.util as u; print(numpy.__version__); "
                  "print(u.find_spec('pwem') is None)"], env=clean)
    numpy_version, no_scipion = probe.stdout.split()
    assert int(numpy_version.split(".")[0]) >= 2 and no_scipion == "True", probe.stdout
    return python, activation


@pytest.fixture(scope="module")
def copick_python(copick_env):
    return copick_env[0]


PROJECT = textwrap.dedent("""
    import os, sys
    import copick
    from copick.models import PickableObject
    from picker3d.engine.simulation.dataset import write_simulation
    from picker3d.engine.formats.mrc import read_volume
    from picker3d.engine.formats.readers import read_table
    base = sys.argv[1]
    man = write_simulation(os.path.join(base, "sim"), n_tomograms=2, seed=71, shape=(48, 80, 80), snr=2.0,
                           species=["barrel"], counts={"barrel": 8}, crowders=0, vesicles=0, membranes=0, gold=0)
    radius = man["diameters"]["barrel"] / 2 * 10.0
    root = copick.ops.open.new_config(os.path.join(base, "copick.json"), os.path.join(base, "overlay"),
                                      pickable_objects=[PickableObject(name="barrel", is_particle=True, label=1,
                                                                       radius=radius)])
    for i, name in enumerate(("TS_1", "TS_2")):
        vol, vs = read_volume(os.path.join(base, "sim", f"tomo_{i:02d}.mrc"))
        run = root.new_run(name)
        run.new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(vol)
        truth = read_table(os.path.join(base, "sim", f"tomo_{i:02d}.tsv"))
        run.new_picks("barrel", "0", "curation").from_numpy(truth.xyz * 10.0)
    print("DIAMETER", man["diameters"]["barrel"])
""")

READ_BACK = textwrap.dedent("""
    import sys, json
    import copick
    root = copick.from_file(sys.argv[1])
    picks = root.get_run("TS_2").get_picks(object_name="barrel", user_id="picker3d", session_id="0")[0]
    print(json.dumps({"xyz": picks.numpy()[0].tolist(), "scores": picks.scores().tolist(),
                      "objects": {o.name: o.radius for o in root.pickable_objects}}))
""")


def picker3d(python, *args, ok=True):
    r = subprocess.run([python, "-m", "picker3d", *map(str, args)], capture_output=True, text=True, timeout=900)
    if ok:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_copick_project_train_pick_write_back_evaluate_classify(copick_python, tmp_path):
    import numpy as np

    from picker3d.engine.formats.readers import read_table
    _run([copick_python, "-c", PROJECT, str(tmp_path)], cwd=str(tmp_path))
    cfg = tmp_path / "copick.json"
    common = ["--copick-config", cfg, "--voxel-spacing", "10", "--tomo-type", "wbp"]
    picker3d(copick_python, "train", *common, "--runs", "TS_1", "--picks-user", "curation", "--out", tmp_path / "m.pt",
             "--epochs", "6", "--iters-per-epoch", "10", "--patch", "32", "--batch", "2", "--bin", "1",
             "--lr", "5e-3", "--device", "cpu")
    picker3d(copick_python, "pick", *common, "--runs", "TS_2", "--model", tmp_path / "m.pt", "--out-dir",
             tmp_path / "picks", "--device", "cpu", "--threshold", "0.3")
    table = read_table(str(tmp_path / "picks" / "TS_2.tsv"))
    assert len(table) > 0
    back = json.loads(_run([copick_python, "-c", READ_BACK, str(cfg)]).stdout)
    # positions in Å as copick keeps them: back to the table's voxels to 0.01, scores kept
    np.testing.assert_allclose(np.asarray(back["xyz"]) / 10.0, table.xyz, atol=0.01)
    np.testing.assert_allclose(back["scores"], table.scores, atol=1e-6)
    # the challenge's metric and the picking figures, pooled over the runs
    r = picker3d(copick_python, "evaluate", *common, "--runs", "TS_2", "--pred", "picker3d:0", "--ref", "curation",
                 "--metric", "challenge")
    res = json.loads(r.stdout)
    assert res["beta"] == 4 and set(res["per_object"]) == {"barrel"} and 0 <= res["score"] <= 1
    assert res["per_object"]["barrel"]["tp"] + res["per_object"]["barrel"]["fn"] == 8
    r = picker3d(copick_python, "evaluate", *common, "--pred", "curation", "--ref", "curation")
    assert json.loads(r.stdout)["overall"]["f1"] == 1.0
    # classify the curated picks of both runs
    picker3d(copick_python, "classify", *common, "--picks-user", "curation", "--box", "24", "--no-align",
             "--k-range", "2-2", "--iterations", "1", "--out", tmp_path / "labels.tsv", "--device", "cpu")
    labels = read_table(str(tmp_path / "labels.tsv"))
    assert len(labels) == 16 and set(labels.extra["tomogram"]) == {"TS_1", "TS_2"}


def test_copick_bad_input_one_line_nothing_written(copick_python, tmp_path):
    _run([copick_python, "-c", PROJECT, str(tmp_path)], cwd=str(tmp_path))
    cfg = tmp_path / "copick.json"
    model = tmp_path / "m.pt"
    cases = [
        (["evaluate", "--copick-config", tmp_path / "none.json", "--pred", "a", "--ref", "b"], "configuration file not found"),
        (["evaluate", "--copick-config", cfg, "--runs", "TS_9", "--pred", "a", "--ref", "curation"], "no run TS_9"),
        (["classify", "--copick-config", cfg, "--voxel-spacing", "7", "--out", tmp_path / "l.tsv"], "no voxel spacing 7"),
        (["classify", "--copick-config", cfg, "--tomo-type", "denoised", "--out", tmp_path / "l.tsv"], "no 'denoised'"),
        (["train", "--copick-config", cfg, "--runs", "TS_1", "--diameters", "ribosome=20", "--out", model],
         "no object ribosome"),
    ]
    for argv, message in cases:
        r = picker3d(copick_python, *argv, ok=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (argv, r.stderr[-2000:])
    assert not any(os.path.exists(p) for p in (model, tmp_path / "l.tsv"))


def test_copick_scipion_import_then_export_round_trip(copick_env, copick_python, tmp_path):
    """In Scipion: *import copick project* gives the runs' tomograms and curated picks as sets
    (positions equal to the truth to 0.01 voxel); *export to copick* writes them back as
    another user / session, read with copick to the same positions. Both protocols run the
    engine in the copick environment (Scipion's process never imports copick)."""
    _run([copick_python, "-c", PROJECT, str(tmp_path)], cwd=str(tmp_path))
    env = dict(os.environ, PICKER3D_ENV_ACTIVATION=f". {copick_env[1]}")
    r = subprocess.run([sys.executable, "-c", SCIPION_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path), timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "copick" not in r.stdout.split("MODULES ")[-1].split()
    back = json.loads(_run([copick_python, "-c", READ_ALL, str(tmp_path / "copick.json")]).stdout)
    import numpy as np

    from picker3d.engine.formats.readers import read_table
    for i, run in enumerate(("TS_1", "TS_2")):
        truth = read_table(str(tmp_path / "sim" / f"tomo_{i:02d}.tsv"))
        got = np.asarray(back[run]) / 10.0
        np.testing.assert_allclose(got[np.lexsort(got.T)], truth.xyz[np.lexsort(truth.xyz.T)], atol=0.01)


SCIPION_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from pyworkflow.project import Manager
    from tomo.constants import BOTTOM_LEFT_CORNER
    from picker3d.protocols import ProtPicker3DExportCopick, ProtPicker3DImportCopick
    from picker3d.engine.formats.readers import read_table
    base = sys.argv[1]
    manager = Manager()
    os.makedirs(manager.PROJECTS, exist_ok=True)
    if manager.hasProject("picker3d_copick_test"):
        manager.deleteProject("picker3d_copick_test")
    proj = manager.createProject("picker3d_copick_test", location=os.path.join(base, "projects"))
    os.chdir(proj.getPath())

    def run(prot):
        proj.launchProtocol(prot, wait=True)
        prot = proj.getProtocol(prot.getObjId())
        assert prot.isFinished(), (prot.getStatusMessage(), prot.getErrorMessage())
        return prot

    imp = run(proj.newProtocol(ProtPicker3DImportCopick, configFile=os.path.join(base, "copick.json"),
                               picksUser="curation", boxSize=24))
    assert imp.tomograms.getSize() == 2 and imp.tomograms.getSamplingRate() == 10.0
    assert imp.coordinates.getSize() == 16
    for i, ts in enumerate(("TS_1", "TS_2")):
        truth = read_table(os.path.join(base, "sim", f"tomo_{i:02d}.tsv")).xyz
        got = np.array([c.getPosition(BOTTOM_LEFT_CORNER) for c in imp.coordinates.iterCoordinates()
                        if c.getTomoId() == ts])
        np.testing.assert_allclose(got[np.lexsort(got.T)], truth[np.lexsort(truth.T)], atol=0.01)
    run(proj.newProtocol(ProtPicker3DExportCopick, inputCoordinates=imp.coordinates,
                         configFile=os.path.join(base, "copick.json"), userId="scipion", sessionId="7"))
    print("MODULES " + " ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("copick", "torch"))))
""")

READ_ALL = textwrap.dedent("""
    import sys, json
    import copick
    root = copick.from_file(sys.argv[1])
    print(json.dumps({r.name: [p for pk in r.get_picks(user_id="scipion", session_id="7")
                               for p in pk.numpy()[0].tolist()] for r in root.runs}))
""")


def test_copick_write_refuses_a_picks_file_of_another_run(copick_python, tmp_path):
    _run([copick_python, "-c", PROJECT, str(tmp_path)], cwd=str(tmp_path))
    from picker3d.engine.formats.table import CoordTable
    from picker3d.engine.formats.writers import write_copick
    picks = write_copick(str(tmp_path / "p.json"), CoordTable([[10, 10, 10]], ["barrel"]), 10.0, run_name="TS_2")
    r = picker3d(copick_python, "copick-write", "--copick-config", tmp_path / "copick.json", "--coords", picks,
                 "--runs", "TS_1", "--out-user", "x", ok=False)
    assert r.returncode == 2 and "picks of run TS_2, not of run TS_1" in r.stderr
    r = picker3d(copick_python, "copick-write", "--copick-config", tmp_path / "copick.json", "--coords", picks,
                 "--runs", "TS_9", ok=False)
    assert r.returncode == 2 and "no run TS_9" in r.stderr
    assert not list((tmp_path / "overlay").glob("ExperimentRuns/*/Picks/x_*"))


def test_copick_write_adds_a_missing_object_with_its_radius(copick_python, tmp_path):
    """Picks of a class the configuration lacks: the object is added (radius = half the
    diameter given, in Å) and the picks stored with their scores."""
    _run([copick_python, "-c", PROJECT, str(tmp_path)], cwd=str(tmp_path))
    from picker3d.engine.formats.table import CoordTable
    from picker3d.engine.formats.writers import write_table
    table = tmp_path / "TS_1.tsv"
    write_table(str(table), CoordTable([[10, 12, 14], [30, 31, 32]], ["ribosome", "ribosome"], [0.5, 0.75]))
    picker3d(copick_python, "copick-write", "--copick-config", tmp_path / "copick.json", "--coords", table,
             "--out-user", "me", "--diameters", "ribosome=24", "--voxel-spacing", "10")
    config = json.loads((tmp_path / "copick.json").read_text())
    radii = {o["name"]: o["radius"] for o in config["pickable_objects"]}
    assert radii["ribosome"] == 120.0 and "barrel" in radii
    stored = json.loads((tmp_path / "overlay" / "ExperimentRuns" / "TS_1" / "Picks" / "me_0_ribosome.json").read_text())
    assert [p["score"] for p in stored["points"]] == [0.5, 0.75]
    assert [p["location"]["x"] for p in stored["points"]] == [100.0, 300.0]

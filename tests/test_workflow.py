"""The workflow JSON: Scipion's project-creation script accepts it, and a tiny run of it
goes from imported tomograms to exported coordinates."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.scipion

CLASSES = ["ProtImportTomograms", "ProtPicker3DImportAnnotations", "ProtPicker3DMasks", "ProtPicker3DTrain",
           "ProtPicker3DPick", "ProtExportCoordinates3D", "ProtPicker3DClassify"]


def test_scipion_create_script_accepts_the_workflow(tmp_path):
    from picker3d.workflow import workflow_protocols, write_workflow
    wf = write_workflow(str(tmp_path / "wf.json"),
                        workflow_protocols("./simulated", "./annotations", {"barrel": 17.0}, minutes=1))
    import uuid
    name = f"picker3d_wf_create_{uuid.uuid4().hex[:8]}"   # project names are global to SCIPION_USER_DATA
    loc = str(tmp_path / "projects")
    os.makedirs(loc)
    r = subprocess.run([sys.executable, "-m", "pyworkflow.project.scripts.create", name, wf, loc],
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    from pwem import Domain
    from pyworkflow.project import Project
    proj = Project(Domain, os.path.join(loc, name))
    cwd = os.getcwd()
    try:
        os.chdir(proj.getPath())
        proj.load()
        runs = sorted(proj.getRuns(), key=lambda p: p.getObjId())
        assert [p.getClassName() for p in runs] == CLASSES
        pick = runs[4]
        assert pick.inputModel.getObjValue() is runs[3] or pick.inputModel.getObjValue().getObjId() == runs[3].getObjId()
        assert pick.inputModel.getExtended() == "model"
    finally:
        os.chdir(cwd)
        from pyworkflow.project import Manager
        Manager().deleteProject(name)


def test_tiny_workflow_runs_end_to_end(tmp_path):
    import shutil

    from picker3d.engine.formats.readers import read_table
    from picker3d.engine.metrics import evaluate
    from picker3d.engine.simulation.dataset import write_simulation
    from picker3d.workflow import run_workflow, step, workflow_protocols, write_workflow
    sim = tmp_path / "simulated"
    write_simulation(str(sim), n_tomograms=2, seed=70, shape=(48, 80, 80), snr=2.0, species=["barrel"],
                     counts={"barrel": 8}, crowders=0, vesicles=0, membranes=0, gold=0)
    (tmp_path / "annotations").mkdir()
    shutil.copy(sim / "tomo_00.tsv", tmp_path / "annotations" / "tomo_00.tsv")
    wf = workflow_protocols("./simulated", "./annotations", {"barrel": 17.0}, minutes=0.6, binning=1,
                            channels="8,16,24,36")
    step(wf, "ProtPicker3DTrain").update(patchSize=32, batchSize=2, iterationsPerEpoch=10, learningRate=5e-3)
    step(wf, "ProtPicker3DClassify").update(binning=1, kMax=4, iterations=2)
    path = write_workflow(str(tmp_path / "wf.json"), wf)
    lines = []
    proj, prots = run_workflow("picker3d_wf_tiny_test", path, location=str(tmp_path / "projects"),
                               log=lines.append)
    assert len(lines) == 7 and all("finished" in ln.lower() for ln in lines), lines
    pick, export = step(prots, "ProtPicker3DPick"), step(prots, "ProtExportCoordinates3D")
    cwd = os.getcwd()
    os.chdir(proj.getPath())
    try:     # only the tomograms: not the simulator's density and occupancy maps beside them
        assert sorted(t.getTsId() for t in step(prots, "ProtImportTomograms").Tomograms) == ["tomo_00", "tomo_01"]
    finally:
        os.chdir(cwd)
    r = evaluate(pick.getTable("tomo_01"), read_table(sim / "tomo_01.tsv"), {"barrel": 17.0})
    assert r["f1"] > 0.6, r
    exported = os.path.join(proj.getPath(), export._getExportPath("tomo_01.txt"))
    with open(exported) as fh:
        assert len(fh.read().split("\n")) - 1 == len(pick.getTable("tomo_01"))
    # the workflow ends with the classification of every pick
    classify = step(prots, "ProtPicker3DClassify")
    cwd = os.getcwd()
    os.chdir(proj.getPath())     # run sets are stored with project-relative paths
    try:
        assert classify.coordinates.getSize() == pick.coordinates.getSize()
        k = max(c.getGroupId() for c in classify.coordinates.iterCoordinates())
        assert classify.averages.getSize() == k == classify.getResult()[1]["k"]
    finally:
        os.chdir(cwd)

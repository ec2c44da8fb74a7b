"""Scipion's project window under Xvfb: the Tomography protocol tree lists every picker3d
protocol; a screenshot is saved (path printed and kept in SCIPION_USER_DATA/screenshots)."""
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.scipion

GUI_SCRIPT = r"""
import json, os, sys
from pyworkflow.gui.project import ProjectWindow
path, shot = sys.argv[1], sys.argv[2]
win = ProjectWindow(path)
result = {}

def walk(tree, item, out):
    for child in tree.get_children(item):
        out.append((child, tree.item(child, "text")))
        walk(tree, child, out)

def check():
    try:
        view = win.viewWidget
        view.settings.setProtocolView("Tomography")
        view.protCfg = view.getCurrentProtocolView()
        view.updateProtocolsTree(view.protCfg)
        items = []
        walk(view.protTree, "", items)
        result["items"] = [[k, t] for k, t in items]
        for k, t in items:   # show picker3d's entries in the screenshot
            if t.strip() in ("Picking", "Particles"):
                view.protTree.item(k, open=True)
        win.root.update()
        win.root.after(1500, grab)
    except Exception as exc:
        result["error"] = repr(exc)
        win.root.quit()

def grab():
    try:
        from PIL import ImageGrab
        win.root.update()
        ImageGrab.grab(xdisplay=os.environ["DISPLAY"]).save(shot)
        result["screenshot"] = shot
    except Exception as exc:
        result["error"] = repr(exc)
    print("RESULT " + json.dumps(result), flush=True)
    win.root.quit()

win.root.after(4000, check)
win.show()
"""

EXPECTED = {"ProtPicker3DImportAnnotations", "ProtPicker3DMasks", "ProtPicker3DTrain", "ProtPicker3DPick",
            "ProtPicker3DImportModel"}


@pytest.fixture
def xvfb():
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb; scripts/bootstrap.sh installs it)")
    display = f":{50 + os.getpid() % 40}"
    proc = subprocess.Popen([exe, display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = f"/tmp/.X11-unix/X{display[1:]}"
    for _ in range(100):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    yield display
    proc.terminate()
    proc.wait(timeout=10)


def test_project_window_lists_picker3d_protocols(xvfb, tmp_path):
    from pyworkflow.project import Manager

    from picker3d.workflow import workflow_protocols, write_workflow
    wf = write_workflow(str(tmp_path / "wf.json"),
                        workflow_protocols("./simulated", "./annotations", {"barrel": 17.0}, minutes=1))
    name = f"picker3d_gui_{uuid.uuid4().hex[:8]}"
    manager = Manager()
    os.makedirs(manager.PROJECTS, exist_ok=True)   # fresh user data: no projects folder yet
    project = manager.createProject(name, location=str(tmp_path / "projects"))
    project.loadProtocols(wf)    # the workflow's boxes appear in the runs graph
    shots = os.path.join(os.environ["SCIPION_USER_DATA"], "screenshots")
    os.makedirs(shots, exist_ok=True)
    shot = os.path.join(shots, "picker3d_project_window.png")
    env = dict(os.environ, DISPLAY=xvfb)
    try:
        r = subprocess.run([sys.executable, "-c", GUI_SCRIPT, project.getPath(), shot], capture_output=True,
                           text=True, env=env, cwd=project.getPath(), timeout=300)
    finally:
        manager.deleteProject(name)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(line[-1][7:])
    assert "error" not in result, result
    keys = {k.split(".")[-1]: t for k, t in result["items"]}
    assert EXPECTED <= set(keys), sorted(keys)
    assert all(keys[c].startswith("picker3d - ") for c in EXPECTED)
    import numpy as np
    from PIL import Image
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (1000, 1600) and img.std() > 10
    print(f"screenshot: {shot}")

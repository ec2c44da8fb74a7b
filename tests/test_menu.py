"""The protocol menu: Scipion's own tree builder finds every picker3d protocol, both from
this (editable) checkout and from a regular install of the built wheel."""
import glob
import json
import os
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.scipion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PICKING = {"ProtPicker3DImportAnnotations", "ProtPicker3DMasks", "ProtPicker3DTrain", "ProtPicker3DPick",
           "ProtPicker3DImportModel", "ProtPicker3DEvaluate"}
EXPECTED = PICKING | {"ProtPicker3DClassify", "ProtPicker3DImportCopick", "ProtPicker3DExportCopick"}

# Runs in a subprocess so that the import path (checkout or unpacked wheel) is controlled.
TREE_SCRIPT = r"""
import json, sys
from pwem import Domain
from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig
import picker3d
tree = ProtocolTreeConfig.load(Domain, "/nonexistent/protocols.conf")

def walk(node, path, out):
    for child in node.childs:
        p = path + [child.text]
        if child.tag and child.tag.startswith("protocol") and child.value:
            out.append({"value": child.value, "text": child.text, "path": p[:-1], "tag": child.tag})
        walk(child, p, out)

found = []
walk(tree["Tomography"], ["Tomography"], found)
print(json.dumps({"file": picker3d.__file__, "items": found}))
"""


def _tree(pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", TREE_SCRIPT], capture_output=True, text=True, env=env, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check(result):
    items = [i for i in result["items"] if i["value"] in EXPECTED]
    assert {i["value"] for i in items} == EXPECTED, result["items"]
    assert all(i["text"].startswith("picker3d - ") for i in items)
    assert all(i["tag"] != "protocol-disabled" for i in items), items
    picking = {i["value"] for i in items if i["path"][-2:] == ["Particles", "Picking"]}
    assert picking == PICKING
    classify = {i["value"] for i in items if i["path"][-2:] == ["Particles", "Classify"]}
    assert classify == {"ProtPicker3DClassify"}
    imports = {i["value"] for i in items if i["path"][-1] == "Imports"}
    assert imports == {"ProtPicker3DImportAnnotations", "ProtPicker3DImportModel", "ProtPicker3DImportCopick"}
    exports = {i["value"] for i in items if i["path"][-1] == "Exports"}
    assert exports == {"ProtPicker3DExportCopick"}


def test_menu_from_checkout():
    result = _tree()
    _check(result)


def test_top_level_protocols_conf_is_the_package_one():
    top = os.path.join(ROOT, "protocols.conf")
    assert os.path.realpath(top) == os.path.realpath(os.path.join(ROOT, "picker3d", "protocols.conf"))


def test_menu_from_built_wheel(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), ROOT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = glob.glob(str(tmp_path / "dist" / "scipion_em_picker3d-*.whl"))
    assert wheel, os.listdir(tmp_path / "dist")
    with zipfile.ZipFile(wheel[0]) as z:
        names = z.namelist()
        assert "picker3d/protocols.conf" in names
        with open(os.path.join(ROOT, "picker3d", "protocols.conf"), "rb") as fh:
            assert z.read("picker3d/protocols.conf") == fh.read()
        z.extractall(tmp_path / "site")
    result = _tree(str(tmp_path / "site"))
    assert result["file"].startswith(str(tmp_path / "site")), result["file"]
    _check(result)

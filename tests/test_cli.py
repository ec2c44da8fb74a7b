"""The command line is a public contract: names, flags and the x y z class score table."""
import json
import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from picker3d.engine.cli import main
from picker3d.engine.formats.readers import read_table


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "picker3d", *map(str, args)], capture_output=True, text=True)


def test_simulate_masks_evaluate_chain(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--seed", "4", "--shape", "48", "80", "80",
                 "--snr", "0.5", "--species", "large", "tiny", "--tilt-range", "50", "--voxel-size", "10"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["tomograms"][0]["tilt_range_deg"] == 50 and set(man["diameters"]) == {"large", "tiny"}
    tomo, coords = out / "tomo_00.mrc", out / "tomo_00.tsv"
    diam = ",".join(f"{k}={v}" for k, v in man["diameters"].items())
    assert main(["masks", "--tomogram", str(tomo), "--coords", str(coords), "--diameters", diam,
                 "--type", "tball", "--out", str(tmp_path / "m.mrc")]) == 0
    m = mrcfile.read(tmp_path / "m.mrc")
    assert m.shape == (48, 80, 80) and set(np.unique(m)) <= {0, 1, 2} and (m > 0).sum() > 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(coords), "--ref", str(coords), "--diameters", diam,
                 "--occupancy", str(out / "tomo_00_occupancy.mrc")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["f1"] == 1.0 and res["mean_class_f1"] == 1.0 and res["shrec"]["missed"] == 0
    # several tomograms: per tomogram by file stem, and pooled (the empty picks of the second count)
    empty = tmp_path / "none.tsv"
    empty.write_text("x\ty\tz\tclass\tscore\n")
    assert main(["evaluate", "--pred", str(coords), str(empty), "--ref", str(coords), str(coords),
                 "--diameters", diam]) == 0
    res = json.loads(capsys.readouterr().out)
    n = len(read_table(coords))
    assert set(res["per_tomogram"]) == {"1_tomo_00", "2_tomo_00"}
    assert res["per_tomogram"]["1_tomo_00"]["f1"] == 1.0 and res["per_tomogram"]["2_tomo_00"]["tp"] == 0
    assert (res["overall"]["tp"], res["overall"]["fn"]) == (n, n)


def test_subtomogram_mode(tmp_path):
    assert main(["simulate", "--out", str(tmp_path), "--subtomograms", "2", "--box", "16",
                 "--species", "tiny", "shell", "--snr", "1"]) == 0
    with mrcfile.open(tmp_path / "subtomograms.mrc") as m:
        assert m.data.shape == (4, 16, 16, 16)
    assert sorted(read_table(tmp_path / "subtomograms.tsv").classes) == ["shell", "shell", "tiny", "tiny"]


def test_python_dash_m_and_version():
    r = run_cli("--version")
    assert r.returncode == 0 and "picker3d" in r.stdout


@pytest.mark.parametrize("args, culprit", [
    (["masks", "--tomogram", "missing.mrc", "--coords", "c.tsv", "--diameters", "5", "--out", "o.mrc"], "missing.mrc"),
    (["masks", "--tomogram", "notmrc.mrc", "--coords", "c.tsv", "--diameters", "5", "--out", "o.mrc"], "notmrc.mrc"),
    (["masks", "--tomogram", "t.mrc", "--coords", "far.tsv", "--diameters", "5", "--out", "o.mrc"], "far.tsv"),
    (["masks", "--tomogram", "t.mrc", "--coords", "c.tsv", "--diameters", "x=abc", "--out", "o.mrc"], "--diameters"),
    (["evaluate", "--pred", "c.tsv", "--ref", "c.tsv"], "--diameters"),
    (["simulate", "--out", "s", "--species", "ribosome"], "ribosome"),
])
def test_bad_input_is_one_line_naming_the_culprit(tmp_path, args, culprit):
    mrcfile.new(tmp_path / "t.mrc", np.zeros((8, 8, 8), np.float32)).close()
    (tmp_path / "notmrc.mrc").write_text("hello")
    (tmp_path / "c.tsv").write_text("x\ty\tz\n1\t2\t3\n")
    (tmp_path / "far.tsv").write_text("x\ty\tz\n1\t2\t30\n")
    r = subprocess.run([sys.executable, "-m", "picker3d", *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("picker3d: error:") and culprit in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "o.mrc")   # nothing half-written


def test_subset_with_an_empty_index_list():
    """A class with no pick in a tomogram gives an empty selection (a regression: [] is float)."""
    from picker3d.engine.formats.table import CoordTable
    t = CoordTable([[1, 2, 3], [4, 5, 6]], ["a", "b"], [0.5, 0.9])
    assert len(t.subset([])) == 0 and t.subset([]).classes.tolist() == []
    assert t.subset(np.array([False, True])).classes.tolist() == ["b"]

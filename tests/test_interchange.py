"""picker3d's picks in the files other programs read: RELION 5, RELION 3/4, Dynamo and copick,
from 'pick --format' and 'convert'; each writer read back to 0.01 voxel."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from picker3d.engine.cli import main
from picker3d.engine.formats.mrc import write_volume
from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.table import CoordTable
from picker3d.engine.formats.writers import OUTPUT_FORMATS, write_format, write_table

SHAPE = (40, 90, 70)        # z y x
VOXEL = 7.83


@pytest.fixture
def picks():
    rng = np.random.default_rng(11)
    xyz = rng.uniform(0, 1, (25, 3)) * (np.array(SHAPE[::-1]) - 1)
    return CoordTable(xyz, rng.choice(["ribosome", "apoferritin"], 25), rng.uniform(0.1, 1.0, 25))


@pytest.mark.parametrize("fmt", list(OUTPUT_FORMATS))
def test_each_writer_reads_back_to_a_hundredth_of_a_voxel(tmp_path, picks, fmt):
    written = write_format(str(tmp_path / "tomo_07.out"), picks, fmt, "tomo_07", SHAPE, VOXEL)
    back = [read_table(p, OUTPUT_FORMATS[fmt], tomo_shape=SHAPE, pixel_size=VOXEL) for p in written]
    xyz = np.concatenate([b.xyz for b in back])
    scores = np.concatenate([b.scores for b in back]) if fmt != "dynamo" else None
    order = np.concatenate([np.flatnonzero(picks.classes == n) for n in picks.class_names()]) \
        if fmt == "copick" else np.arange(len(picks))
    np.testing.assert_allclose(xyz, picks.xyz[order], atol=0.01)
    if scores is not None:
        np.testing.assert_allclose(scores, picks.scores[order], atol=1e-5)
    if fmt == "copick":
        assert [b.class_names() for b in back] == [["ribosome"], ["apoferritin"]] or \
               [b.class_names() for b in back] == [["apoferritin"], ["ribosome"]]
        assert json.loads(open(written[0]).read())["run_name"] == "tomo_07"


def test_relion5_is_angstrom_from_the_tomogram_centre(tmp_path):
    import starfile
    t = CoordTable([[35.0, 45.0, 20.0], [0.0, 0.0, 0.0]], ["1", "1"])
    path = write_format(str(tmp_path / "t.star"), t, "relion5", "TS_01", SHAPE, VOXEL)[0]
    df = starfile.read(path)
    assert list(df["rlnTomoName"]) == ["TS_01", "TS_01"]
    np.testing.assert_allclose(df[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                                   "rlnCenteredCoordinateZAngst"]].to_numpy(), [[0, 0, 0], [-35 * VOXEL, -45 * VOXEL,
                                                                                         -20 * VOXEL]], atol=1e-3)


def test_convert_command_and_its_bad_input(tmp_path, picks, capsys):
    tomo = tmp_path / "TS_5.mrc"
    write_volume(tomo, np.zeros(SHAPE, np.float32), VOXEL)
    src = tmp_path / "picks.tsv"
    write_table(str(src), picks)
    for fmt in OUTPUT_FORMATS:
        out = tmp_path / f"conv_{fmt}.x"
        assert main(["convert", "--in", str(src), "--out", str(out), "--to", fmt, "--tomogram", str(tomo)]) == 0
    back = read_table(str(tmp_path / "conv_relion5.x"), "star", tomo_shape=SHAPE, pixel_size=VOXEL)
    np.testing.assert_allclose(back.xyz, picks.xyz, atol=0.01)
    # and back from RELION 5 to the table
    assert main(["convert", "--in", str(tmp_path / "conv_relion5.x"), "--format", "star", "--out",
                 str(tmp_path / "again.tsv"), "--to", "tsv", "--tomogram", str(tomo)]) == 0
    np.testing.assert_allclose(read_table(str(tmp_path / "again.tsv")).xyz, picks.xyz, atol=0.01)
    capsys.readouterr()
    # relion5 without a tomogram; a header with no voxel size; an unknown format: one line, nothing written
    assert main(["convert", "--in", str(src), "--out", str(tmp_path / "n1.star"), "--to", "relion5"]) == 2
    assert "--tomogram" in capsys.readouterr().err
    bare = tmp_path / "bare.mrc"
    write_volume(bare, np.zeros(SHAPE, np.float32), 1.0)
    assert main(["convert", "--in", str(src), "--out", str(tmp_path / "n2.json"), "--to", "copick",
                 "--tomogram", str(bare)]) == 2
    assert "--voxel-size" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "picker3d", "convert", "--in", str(src), "--out",
                        str(tmp_path / "n3.x"), "--to", "imod"], capture_output=True, text=True)
    assert r.returncode == 2 and "--to" in r.stderr and "invalid choice" in r.stderr
    assert not any(os.path.exists(tmp_path / n) for n in ("n1.star", "n2_ribosome.json", "n3.x"))

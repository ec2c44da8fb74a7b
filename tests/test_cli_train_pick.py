"""The train and pick commands end to end."""
import os

from engine_data import small_dataset

from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.writers import write_table


def test_cli_train_and_pick(tmp_path):
    from picker3d.engine.cli import main
    from picker3d.engine.formats.mrc import write_volume
    vol, tab = small_dataset(30)
    write_volume(tmp_path / "t.mrc", vol, 10.0)
    write_table(tmp_path / "t.tsv", tab)
    assert main(["train", "--tomograms", str(tmp_path / "t.mrc"), "--coords", str(tmp_path / "t.tsv"),
                 "--diameters", "barrel=17", "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                 "--iters-per-epoch", "2", "--patch", "24", "--batch", "1", "--tile", "32", "--pad", "4",
                 "--device", "cpu"]) == 0
    from picker3d.engine.modelfile import load_model
    meta = load_model(str(tmp_path / "m.pt"))[1]
    assert meta["bin"] == 2      # --bin auto: a 17-voxel class
    # no --val-tomograms: the training tomogram calibrated the thresholds
    assert meta["thresholds"] is not None and set(meta["thresholds"]["class"]) == {"barrel"}
    assert main(["pick", "--model", str(tmp_path / "m.pt"), "--tomograms", str(tmp_path / "t.mrc"),
                 "--out-dir", str(tmp_path / "picks"), "--threshold", "0.0", "--score-map"]) == 0
    head = (tmp_path / "picks" / "t.tsv").read_text().splitlines()[0]
    assert head == "x\ty\tz\tclass\tscore"
    assert os.path.exists(tmp_path / "picks" / "t_score.mrc")
    read_table(tmp_path / "picks" / "t.tsv", allow_empty=True)
    # a device list: the tomograms are shared out, one model per device, same tables
    import shutil
    for name in ("u", "v"):
        shutil.copy(tmp_path / "t.mrc", tmp_path / f"{name}.mrc")
    tomos = [str(tmp_path / f"{n}.mrc") for n in ("t", "u", "v")]
    assert main(["pick", "--model", str(tmp_path / "m.pt"), "--tomograms", *tomos, "--threshold", "0.0",
                 "--out-dir", str(tmp_path / "multi"), "--device", "cpu,cpu"]) == 0
    single = (tmp_path / "picks" / "t.tsv").read_text()
    assert [(tmp_path / "multi" / f"{n}.tsv").read_text() for n in ("t", "u", "v")] == [single] * 3

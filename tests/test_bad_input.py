"""Bad input and faults: every case ends in one clear line naming the culprit,
no traceback, inputs untouched and no (partial) output left behind.

``pytest -k bad_input`` selects exactly these tests.
"""
import errno
import hashlib
import os
import subprocess
import sys
import time

import mrcfile
import numpy as np
import pytest
import torch

from picker3d.engine.cli import main
from picker3d.engine.formats.mrc import write_volume
from picker3d.engine.formats.table import CoordTable
from picker3d.engine.formats.writers import write_table

SHAPE = (32, 48, 48)


def _sha(path):
    if os.path.isdir(path):
        return "dir"
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Good inputs plus one broken variant per case, and a tiny trained model."""
    d = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    vol = rng.standard_normal(SHAPE).astype(np.float32)
    f = {k: str(d / k) for k in ("tomo.mrc", "tomo_b.mrc", "coords.tsv", "coords_b.tsv")}
    write_volume(f["tomo.mrc"], vol, 10.0)
    write_volume(f["tomo_b.mrc"], vol, 10.0)
    write_table(f["coords.tsv"], CoordTable([[20, 24, 16], [30, 20, 12]], ["a", "a"]))
    write_table(f["coords_b.tsv"], CoordTable([[20, 24, 16]], ["a"]))
    # broken volumes
    f["nan.mrc"] = str(d / "nan.mrc")
    v = vol.copy()
    v[3, 3, 3] = np.nan
    write_volume(f["nan.mrc"], v, 10.0)
    f["inf.mrc"] = str(d / "inf.mrc")
    v = vol.copy()
    v[1, 2, 3] = np.inf
    write_volume(f["inf.mrc"], v, 10.0)
    f["image2d.mrc"] = str(d / "image2d.mrc")
    with mrcfile.new(f["image2d.mrc"]) as m:
        m.set_data(vol[0].copy())
    f["text.mrc"] = str(d / "text.mrc")
    (d / "text.mrc").write_text("this is not an MRC file\n" * 20)
    f["vs0.mrc"] = str(d / "vs0.mrc")
    write_volume(f["vs0.mrc"], vol, 0.0)
    f["vs20.mrc"] = str(d / "vs20.mrc")
    write_volume(f["vs20.mrc"], vol, 20.0)
    f["vs20_small.mrc"] = str(d / "vs20_small.mrc")
    write_volume(f["vs20_small.mrc"], vol[:16, :24, :24], 20.0)
    f["folder.mrc"] = str(d / "folder.mrc")
    os.makedirs(f["folder.mrc"])
    # broken coordinate tables
    tables = {"outside.tsv": "x\ty\tz\tclass\n20\t24\t16\ta\n60\t10\t10\ta\n",
              "negative.tsv": "x\ty\tz\tclass\n20\t24\t-6\ta\n",
              "xzy.tsv": "x\ty\tz\tclass\n40\t30\t20\ta\n10\t28\t40\ta\n",   # y and z swapped
              "nonnumeric.tsv": "x\ty\tz\tclass\n20\tabc\t16\ta\n",
              "empty.tsv": "x\ty\tz\tclass\n",
              "two_classes.tsv": "x\ty\tz\tclass\n20\t24\t16\ta\n30\t20\t12\tb\n",
              "all_outside.tsv": "x\ty\tz\tclass\n60\t10\t10\ta\n10\t70\t10\ta\n10\t10\t40\ta\n"}
    for name, text in tables.items():
        (d / name).write_text(text)
        f[name] = str(d / name)
    # models: a real one, a truncated copy, a newer format, a foreign pickle
    from picker3d.engine.training import train
    f["model.pt"] = str(d / "model.pt")
    train([vol], [CoordTable([[20, 24, 16]], ["a"])], ["a"], {"a": 8}, f["model.pt"], epochs=1,
          iters_per_epoch=1, patch=16, batch=1, tile=32, pad=4, channels=(4, 8), log=lambda m: None, bin=1)
    raw = open(f["model.pt"], "rb").read()
    f["truncated.pt"] = str(d / "truncated.pt")
    open(f["truncated.pt"], "wb").write(raw[: len(raw) // 3])
    ck = torch.load(f["model.pt"], weights_only=False)
    ck["version"] = 99
    f["newer.pt"] = str(d / "newer.pt")
    torch.save(ck, f["newer.pt"])
    f["foreign.pt"] = str(d / "foreign.pt")
    torch.save({"weights": [1, 2, 3]}, f["foreign.pt"])
    f["dir"] = str(d)
    return f


def _check(capsys, data, argv, culprit, outputs=()):
    inputs = [p for p in data.values() if os.path.isfile(p)]
    before = {p: _sha(p) for p in inputs}
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("picker3d: error: "), err
    assert culprit in err[0], err[0]
    assert "Traceback" not in err[0]
    assert {p: _sha(p) for p in inputs} == before          # inputs untouched
    for out in outputs:
        assert not os.path.exists(out), out                 # nothing (partial) written
    return err[0]


def _train(data, tomos, coords, out, *extra, diam="a=8"):
    return ["train", "--tomograms", *tomos, "--coords", *coords, "--diameters", diam, "--out", out,
            "--epochs", "1", "--iters-per-epoch", "1", "--patch", "16", "--batch", "1", "--tile", "32",
            "--pad", "4", "--channels", "4,8", *extra]


CASES = {
    # id: (argv builder, culprit in the message)
    "missing_tomogram": (lambda f, o: _train(f, [f["dir"] + "/nope.mrc"], [f["coords.tsv"]], o), "nope.mrc: file not found"),
    "folder_as_tomogram": (lambda f, o: _train(f, [f["folder.mrc"]], [f["coords.tsv"]], o), "is a folder"),
    "non_mrc_file": (lambda f, o: _train(f, [f["text.mrc"]], [f["coords.tsv"]], o), "text.mrc: not a readable MRC"),
    "mrc_with_nan": (lambda f, o: _train(f, [f["nan.mrc"]], [f["coords.tsv"]], o), "nan.mrc: contains 1 NaN/Inf"),
    "mrc_with_inf": (lambda f, o: _train(f, [f["inf.mrc"]], [f["coords.tsv"]], o), "inf.mrc: contains 1 NaN/Inf"),
    "image_2d": (lambda f, o: _train(f, [f["image2d.mrc"]], [f["coords.tsv"]], o), "expected a 3D volume"),
    "voxel_size_zero": (lambda f, o: _train(f, [f["vs0.mrc"]], [f["coords.tsv"]], o), "vs0.mrc: voxel size is 0"),
    "train_voxel_size_zero_given": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--voxel-size", "0"),
                                    "--voxel-size: 0 must be"),
    "pick_voxel_size_zero": (lambda f, o: ["pick", "--model", f["model.pt"], "--tomograms", f["tomo.mrc"], "--out-dir",
                                           o, "--voxel-size", "0"], "--voxel-size: 0 must be"),
    "pick_mask_other_shape": (lambda f, o: ["pick", "--model", f["model.pt"], "--tomograms", f["tomo.mrc"],
                                            "--out-dir", o, "--mask", f["vs20_small.mrc"]],
                              "--mask: " ),
    "pick_z_range_outside": (lambda f, o: ["pick", "--model", f["model.pt"], "--tomograms", f["tomo.mrc"],
                                           "--out-dir", o, "--z-range", "10-500"], "--z-range: 10-500 lies outside"),
    "coordinates_outside": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["outside.tsv"]], o), "outside.tsv: row 2"),
    "coordinates_negative": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["negative.tsv"]], o), "negative coordinate"),
    "axis_order_swapped": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["xzy.tsv"]], o), "look like x z y"),
    "missing_coordinates": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["dir"] + "/none.tsv"], o),
                            "none.tsv: coordinate file not found"),
    "non_numeric_coordinate": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["nonnumeric.tsv"]], o), "column 'y' is not a number"),
    "empty_coordinates": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["empty.tsv"]], o), "empty.tsv: no coordinates"),
    "class_without_annotation": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, diam="a=8,b=8"),
                                 "b have no annotation"),
    "class_without_diameter": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["two_classes.tsv"]], o), "no diameter for class"),
    "diameter_larger_than_tile": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--bin", "1", diam="a=30"),
                                  "class a is 30 voxels"),
    "diameter_larger_than_tomogram": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--bin", "1",
                                                          diam="a=40"), "not smaller than the training tomogram (32x48x48"),
    "coords_count_mismatch": (lambda f, o: _train(f, [f["tomo.mrc"], f["tomo_b.mrc"]], [f["coords.tsv"]], o),
                              "--coords: 1 coordinate files for 2 tomograms"),
    "patch_not_multiple_of_8": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--patch", "20"),
                                "--patch: 20 is not a multiple of 8"),
    "patch_not_a_number": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--patch", "big"),
                           "--patch: 'big' must be a positive integer or auto"),
    "bin_zero": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--bin", "0"), "--bin: 0"),
    "bin_word": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--bin", "two"),
                 "--bin: 'two' must be a positive integer or auto"),
    "mask_diameter_zero": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--mask-diameter", "0"),
                           "--mask-diameter: 0 must be at least 1 voxel"),
    "ema_one": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--ema", "1"), "--ema: 1 must be a decay"),
    "removed_holdout": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--holdout", "0.5"),
                        "--holdout: removed in picker3d 0.2; give validation tomograms"),
    "removed_no_augment": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--no-augment"),
                           "--no-augment: removed in picker3d 0.2; augmentation is always on"),
    "removed_no_bin_phases": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--no-bin-phases"),
                              "--no-bin-phases: removed in picker3d 0.2"),
    "unknown_format": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--format", "pdb"), "--format"),
    "cuda_without_gpu": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--device", "cuda"), "--device: cuda"),
    "sparse_without_prior": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--labels", "sparse"), "--prior"),
    "prior_out_of_range": (lambda f, o: _train(f, [f["tomo.mrc"]], [f["coords.tsv"]], o, "--labels", "sparse",
                                               "--prior", "1.5"), "--prior: 1.5"),
    "model_missing": (lambda f, o: ["pick", "--model", f["dir"] + "/none.pt", "--tomograms", f["tomo.mrc"], "--out-dir", o],
                      "none.pt: model file not found"),
    "model_truncated": (lambda f, o: ["pick", "--model", f["truncated.pt"], "--tomograms", f["tomo.mrc"], "--out-dir", o],
                        "truncated.pt: not a readable picker3d model"),
    "model_newer_format": (lambda f, o: ["pick", "--model", f["newer.pt"], "--tomograms", f["tomo.mrc"], "--out-dir", o],
                           "format version 99 is newer"),
    "model_foreign_file": (lambda f, o: ["pick", "--model", f["foreign.pt"], "--tomograms", f["tomo.mrc"], "--out-dir", o],
                           "foreign.pt: not a picker3d model file"),
    "model_other_classes": (lambda f, o: ["pick", "--model", f["model.pt"], "--tomograms", f["tomo.mrc"], "--out-dir", o,
                                          "--classes", "ribosome"], "was not trained on ribosome"),
    "pick_2d_image": (lambda f, o: ["pick", "--model", f["model.pt"], "--tomograms", f["image2d.mrc"], "--out-dir", o],
                      "expected a 3D volume"),
    "masks_unknown_class": (lambda f, o: ["masks", "--tomogram", f["tomo.mrc"], "--coords", f["two_classes.tsv"],
                                          "--diameters", "a=8", "--out", o + ".mrc"], "no diameter for class(es) b"),
    "evaluate_without_diameters": (lambda f, o: ["evaluate", "--pred", f["coords.tsv"], "--ref", f["coords.tsv"],
                                                 "--out", o + ".json"], "--diameters"),
    "classify_bad_k_range": (lambda f, o: ["classify", "--tomograms", f["tomo.mrc"], "--coords", f["coords.tsv"],
                                           "--k-range", "9-3", "--out", o + ".tsv"], "--k-range"),
    "classify_box_too_small": (lambda f, o: ["classify", "--tomograms", f["tomo.mrc"], "--coords", f["coords.tsv"],
                                             "--box", "3", "--out", o + ".tsv"], "--box: 3"),
    "classify_box_larger_than_tomogram": (lambda f, o: ["classify", "--tomograms", f["tomo.mrc"], "--coords",
                                                        f["coords.tsv"], "--box", "40", "--out", o + ".tsv"],
                                          "--box: 40 voxels is larger than the tomogram"),
    "classify_fewer_picks_than_k": (lambda f, o: ["classify", "--tomograms", f["tomo.mrc"], "--coords", f["coords.tsv"],
                                                  "--box", "16", "--bin", "1", "--k-range", "3-5", "--out", o + ".tsv"],
                                    "--coords: 2 picks are too few to cluster into at least 3 classes"),
    "classify_every_pick_outside": (lambda f, o: ["classify", "--tomograms", f["tomo.mrc"], "--coords",
                                                  f["all_outside.tsv"], "--box", "16", "--bin", "1", "--out", o + ".tsv"],
                                    "all_outside.tsv"),
    "classify_negative_split_separation": (lambda f, o: ["classify", "--tomograms", f["tomo.mrc"], "--coords",
                                                         f["coords.tsv"], "--split-separation", "-1",
                                                         "--out", o + ".tsv"], "--split-separation: -1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_cli(case, data, tmp_path, capsys):
    build, culprit = CASES[case]
    out = str(tmp_path / "out")
    argv = build(data, out)
    outputs = [out, out + ".ckpt", out + ".mrc", out + ".json", out + ".tsv"]
    _check(capsys, data, argv, culprit, outputs)


def test_bad_input_tile_larger_than_volume_is_shrunk(data, tmp_path, capsys):
    """Not an error: the tile is cut to the volume and the log says so."""
    rc = main(["pick", "--model", data["model.pt"], "--tomograms", data["tomo.mrc"], "--out-dir", str(tmp_path),
               "--tile", "512"])
    out = capsys.readouterr().out
    assert rc == 0 and "tile 512 is larger than the volume" in out
    assert os.path.exists(tmp_path / "tomo.tsv")


def test_bad_input_out_of_memory_retries_then_fails_clearly(data, tmp_path, capsys, monkeypatch):
    import picker3d.engine.picking.tiles as pick
    real = pick._predict_tiles
    tiles = []

    def oom_above_24(model, volume, tile, *args):
        tiles.append(tile)
        if tile > 24:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, volume, tile, *args)

    monkeypatch.setattr(pick, "_predict_tiles", oom_above_24)
    # the largest side of the tomogram is 48: a tile of 48 holds it whole
    rc = main(["pick", "--model", data["model.pt"], "--tomograms", data["tomo.mrc"], "--out-dir", str(tmp_path / "a"),
               "--tile", "48"])
    out = capsys.readouterr().out
    assert rc == 0 and tiles == [48, 24] and "retrying with tile 24" in out
    # always out of memory: one line naming --tile, no table written
    monkeypatch.setattr(pick, "_predict_tiles", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    _check(capsys, data, ["pick", "--model", data["model.pt"], "--tomograms", data["tomo.mrc"],
                          "--out-dir", str(tmp_path / "b"), "--tile", "56"], "--tile: out of memory",
           [str(tmp_path / "b" / "tomo.tsv")])


def test_bad_input_disk_full_leaves_no_half_written_file(data, tmp_path, capsys, monkeypatch):
    import picker3d.engine.fileio as fileio
    real_open = open

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, text):
            self.fh.write(text[: len(text) // 2])       # part of it reaches the disk, then:
            raise OSError(errno.ENOSPC, "No space left on device", self.fh.name)

    def full_open(path, mode="r", *args, **kw):
        fh = real_open(path, mode, *args, **kw)
        return FullDisk(fh) if "w" in mode else fh

    monkeypatch.setattr(fileio, "open", full_open, raising=False)
    out_dir = tmp_path / "picks"
    line = _check(capsys, data, ["pick", "--model", data["model.pt"], "--tomograms", data["tomo.mrc"],
                                 "--out-dir", str(out_dir)], "No space left on device")
    assert "while running 'pick'" in line
    assert os.listdir(out_dir) == []          # neither the table nor its temporary file


def test_bad_input_training_killed_mid_epoch_resumes(tmp_path):
    """SIGKILL during training; --resume continues from the last checkpoint to a valid model."""
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.simulation.dataset import simulate_tomogram
    s = simulate_tomogram(shape=(48, 64, 64), seed=3, snr=2.0, species=["barrel"], counts={"barrel": 5},
                          crowders=0, vesicles=0, membranes=0, gold=0)
    write_volume(str(tmp_path / "t.mrc"), s["tomogram"], 10.0)
    write_table(str(tmp_path / "t.tsv"), CoordTable.from_rows(s["rows"]))
    out = str(tmp_path / "m.pt")
    argv = [sys.executable, "-m", "picker3d.engine.cli", "train", "--tomograms", str(tmp_path / "t.mrc"),
            "--coords", str(tmp_path / "t.tsv"), "--diameters", "barrel=17", "--out", out, "--epochs", "4",
            "--iters-per-epoch", "6", "--patch", "32", "--batch", "1", "--tile", "64", "--pad", "8",
            "--channels", "4,8,12,16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not os.path.exists(out + ".ckpt") and time.time() - t0 < 120:
        time.sleep(0.05)
    time.sleep(0.3)               # into the next epoch
    proc.kill()
    proc.wait()
    # as if the kill had come while a checkpoint was being written (it sometimes does):
    # the resumed run removes what the killed one left
    open(os.path.join(tmp_path, ".tmp_m.pt.ckpt_killed.ckpt"), "w").close()
    assert os.path.exists(out + ".ckpt")
    first = load_model(out)[1]["history"]
    assert 1 <= len(first) < 4, "the run was not interrupted"
    r = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming from epoch" in r.stdout
    model, meta = load_model(out)
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]    # no stray temporary files


# ---- protocols (Scipion project) ---------------------------------------------------------

try:
    import tomo.tests.test_base_centralized_layer as _tomo_checks
    _ProtocolBase = _tomo_checks.TestBaseCentralizedLayer
except ImportError:       # Scipion not installed: the engine cases above still run
    _ProtocolBase = object


@pytest.mark.scipion
class TestBadInputProtocols(_ProtocolBase):
    """Protocol-level cases: the run fails with the engine's one line, and registers no output."""

    @classmethod
    def setUpClass(cls):
        import simulated_project
        simulated_project.start(cls, "picker3d_bad_", pattern="tomo_00.mrc", annotate="ann", n_tomograms=1,
                                seed=80, shape=(40, 64, 64), snr=2.0, species=["barrel"], counts={"barrel": 4})

    @classmethod
    def tearDownClass(cls):
        import simulated_project
        simulated_project.end(cls)

    def test_bad_input_protocol_engine_error_is_one_line_and_registers_nothing(self):
        from picker3d.protocols import ProtPicker3DTrain
        prot = self.newProtocol(ProtPicker3DTrain, inputCoordinates=self.coords, diameters="barrel=200",
                                trainBy=1, epochs=1, useGpu=False)
        with pytest.raises(Exception):  # noqa: B017  (Scipion raises a bare Exception for a failed run)
            self.launchProtocol(prot)
        prot = self.proj.getProtocol(prot.getObjId())
        self.assertTrue(prot.isFailed())
        msg = prot.getErrorMessage()
        self.assertIn("picker3d train: --diameters: class barrel is 200 voxels", msg)
        self.assertNotIn("Traceback", msg)
        self.assertEqual(len(msg.strip().splitlines()), 1, msg)
        self.assertIsNone(getattr(prot, "model", None))
        self.assertFalse(os.path.exists(prot._absPath(prot.getModelFile())))

    def test_bad_input_protocol_tsid_without_tomogram(self):
        import shutil

        from picker3d.protocols import ProtPicker3DImportAnnotations
        folder = os.path.join(self.data, "misnamed")
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(self.data, "tomo_00.tsv"), os.path.join(folder, "TS_99.tsv"))
        prot = self.newProtocol(ProtPicker3DImportAnnotations, inputTomograms=self.tomos, filesPath=folder,
                                filesPattern="*.tsv")
        msg = " ".join(prot.validate())
        self.assertIn("TS_99.tsv", msg)
        self.assertIn("tomo_00", msg)

    def test_bad_input_protocol_empty_coordinate_set(self):
        from tomo.objects import SetOfCoordinates3D

        from picker3d.protocols import ProtPicker3DClassify, ProtPicker3DMasks, ProtPicker3DTrain
        empty = SetOfCoordinates3D.create(self.proj.getTmpPath(), template="emptyset%s.sqlite")
        empty.setObjLabel("nothing picked")
        for cls in (ProtPicker3DTrain, ProtPicker3DMasks, ProtPicker3DClassify):
            prot = self.newProtocol(cls)
            prot.inputCoordinates.set(empty)
            self.assertIn("nothing picked is empty", " ".join(prot.validate()), cls.__name__)

    def test_bad_input_protocol_too_few_particles_to_classify(self):
        from picker3d.protocols import ProtPicker3DClassify
        prot = self.newProtocol(ProtPicker3DClassify, inputCoordinates=self.coords, kMin=4, kMax=6)
        self.assertIn("too few to cluster", " ".join(prot.validate()))


def test_bad_input_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """Tables, star files, MRC volumes, model files, training checkpoints and the simulator's
    manifest are written through atomic_write: a failure while writing keeps the previous file
    as it was and removes the temporary one."""
    from picker3d.engine.fileio import atomic_write
    target = tmp_path / "picks.tsv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as tmp, open(tmp, "w") as fh:
            fh.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["picks.tsv"]
    with atomic_write(str(target)) as tmp, open(tmp, "w") as fh:
        fh.write("new\n")
    assert target.read_text() == "new\n" and sorted(os.listdir(tmp_path)) == ["picks.tsv"]


def test_pick_writes_the_chosen_format_beside_the_table(data, tmp_path, capsys):
    """``pick --format relion5`` / ``copick``: the same picks as the table, in Å; an unknown
    format is refused before anything is written."""
    from picker3d.engine.formats.readers import read_table
    for fmt in ("relion5", "copick"):
        out = tmp_path / fmt
        assert main(["pick", "--model", data["model.pt"], "--tomograms", data["tomo.mrc"], "--out-dir", str(out),
                     "--threshold", "0.05", "--format", fmt]) == 0
        table = read_table(str(out / "tomo.tsv"), allow_empty=True)
        extra = sorted(p for p in os.listdir(out) if p != "tomo.tsv")
        assert extra == (["tomo.star"] if fmt == "relion5" else [f"tomo_{c}.json" for c in table.class_names()])
        assert len(table) > 0
        if extra:
            back = read_table(str(out / extra[0]), "star" if fmt == "relion5" else "json", tomo_shape=SHAPE,
                              pixel_size=10.0)
            np.testing.assert_allclose(back.xyz, table.subset(table.classes == table.classes[0]).xyz
                                       if fmt == "copick" else table.xyz, atol=0.01)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["pick", "--model", data["model.pt"], "--tomograms", data["tomo.mrc"], "--out-dir",
              str(tmp_path / "x"), "--format", "imod"])
    assert "--format" in capsys.readouterr().err and not os.path.exists(tmp_path / "x")

"""Options declared once (picker3d.engine.options): the command line, the Python API and the
protocols' checks are made from the same declarations and agree."""
import hashlib
import shlex

import pytest
from engine_data import small_dataset

from picker3d.engine.cli import build_parser
from picker3d.engine.options import (
    CLASSIFY_OPTIONS,
    COMMAND_OPTIONS,
    PICK_OPTIONS,
    TRAIN_OPTIONS,
    ClassifyOptions,
    PickOptions,
    TrainOptions,
    check,
    checked,
    to_argv,
)

REQUIRED = {"train": ["--out", "x"], "pick": ["--out-dir", "x", "--model", "m"], "classify": ["--out", "x"]}


def _subparser(name):
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize("command,cls", [("train", TrainOptions), ("pick", PickOptions),
                                         ("classify", ClassifyOptions)])
def test_every_declared_option_is_a_flag_with_its_default_and_a_field(command, cls):
    parser = _subparser(command)
    defaults = vars(parser.parse_args(REQUIRED[command]))
    fields = set(cls.__dataclass_fields__)
    for opt in COMMAND_OPTIONS[command]:
        assert opt.name in fields
        if opt.cli:
            assert opt.name in defaults, opt.flags
            assert defaults[opt.name] == (",".join(map(str, opt.default)) if isinstance(opt.default, tuple)
                                          else opt.default), opt.flags
            assert opt.help and ("default" in opt.help.lower() or opt.argparse.get("action")), opt.flags


@pytest.mark.parametrize("command,values", [
    ("train", {"patch": 40, "lr": "2e-3", "labels": "sparse", "expected_particles": 50.0, "bin": 2,
               "channels": "4,8", "invert": True, "minutes": 3.0, "network": "slice2d"}),
    ("pick", {"threshold": 0.4, "z_range": "10-50", "polarity_check": False, "format": "relion5",
              "score_map": True}),
    ("classify", {"k_range": "3-7", "align": False, "bin": 1, "contrast_weight": 0.5}),
])
def test_argv_made_from_values_parses_back_to_them(command, values):
    # what a protocol hands the engine reads back as the values it meant
    opts = COMMAND_OPTIONS[command]
    argv = shlex.split(" ".join(to_argv(opts, values)))
    parsed = vars(_subparser(command).parse_args(argv + REQUIRED[command]))
    assert checked(opts, {o.name: parsed[o.name] for o in opts if o.cli}) == checked(opts, values)


def test_checks_name_the_flag_and_are_what_protocols_get():
    assert check("train", {}) == []
    assert check("train", {"patch": 12}) == ["--patch: 12 is not a multiple of 8"]
    assert check("train", {"labels": "sparse"})[0].startswith("--prior: sparse labels need the class prior")
    assert check("train", {"contrastive": 0.1})[0] == "--contrastive: the contrastive module needs --labels sparse"
    assert check("train", {"lr": "fast"})[0] == "--lr: 'fast' must be a number or auto"
    assert check("train", {"channels": "8,x"})[0].startswith("--channels: '8,x' must be comma-separated")
    assert check("pick", {"z_range": "50-10"})[0].startswith("--z-range:")
    assert check("pick", {"voxel_size": 0.0})[0] == "--voxel-size: 0 must be a positive number of Å"
    assert check("classify", {"k_range": "5-2"})[0] == "--k-range: '5-2' needs 1 <= MIN <= MAX"
    assert check("classify", {"box": 16, "bin": 2})[0].startswith("--box: 16 voxels binned by 2")
    # a value that passes the check passes the engine
    assert check("classify", {"box": 22, "bin": 2}) == []


def test_protocols_use_the_shared_checks():
    import os

    import picker3d.protocols as protocols
    folder = os.path.dirname(protocols.__file__)
    for name in ("protocol_train.py", "protocol_pick.py", "protocol_classify.py"):
        text = open(os.path.join(folder, name)).read()
        assert '_engineProblems("' in text, name
    for name in os.listdir(folder):
        assert "multiple of 8" not in open(os.path.join(folder, name)).read(), name


def _weights_hash(path):
    from picker3d.engine.modelfile import load_model
    model, _ = load_model(str(path))
    return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()


def test_command_line_and_python_api_train_the_same_network(tmp_path):
    from picker3d.engine.cli import main
    from picker3d.engine.formats.mrc import write_volume
    from picker3d.engine.formats.writers import write_table
    from picker3d.engine.training import train
    vol, tab = small_dataset(31)
    write_volume(tmp_path / "t.mrc", vol, 10.0)
    write_table(tmp_path / "t.tsv", tab)
    flags = ["--epochs", "1", "--iters-per-epoch", "2", "--patch", "24", "--batch", "2", "--tile", "32", "--pad", "4",
             "--seed", "3", "--precision", "fp32", "--lr", "4e-3", "--ema", "0.9"]
    assert main(["train", "--tomograms", str(tmp_path / "t.mrc"), "--coords", str(tmp_path / "t.tsv"),
                 "--diameters", "barrel=17", "--out", str(tmp_path / "cli.pt"), "--device", "cpu", *flags]) == 0
    options = TrainOptions(epochs=1, iters_per_epoch=2, patch=24, batch=2, tile=32, pad=4, seed=3, precision="fp32",
                           lr=4e-3, ema=0.9, device="cpu", voxel_size=10.0)
    train([vol], [tab], ["barrel"], {"barrel": 17}, str(tmp_path / "api.pt"), options=options, log=lambda m: None)
    assert _weights_hash(tmp_path / "cli.pt") == _weights_hash(tmp_path / "api.pt")
    # and a keyword overrides the options object
    with pytest.raises(Exception, match="--patch: 12 is not a multiple of 8"):
        train([vol], [tab], ["barrel"], {"barrel": 17}, str(tmp_path / "bad.pt"), options=options, patch=12)


def test_declarations_are_unique():
    for opts in (TRAIN_OPTIONS, PICK_OPTIONS, CLASSIFY_OPTIONS):
        names = [o.name for o in opts]
        assert len(names) == len(set(names))

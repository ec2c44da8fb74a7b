"""Training configuration: the automatic choices (binning, patch, batch, label diameters)."""
import pytest
import torch
from engine_data import small_dataset


def test_auto_binning_keeps_small_species_at_full_resolution():
    from picker3d.engine.training.config import auto_bin
    assert auto_bin([25, 17, 16]) == 2
    assert auto_bin([59, 39, 27, 57], "cpu") == 4     # large particles alone: bin 4 on a CPU
    assert auto_bin([59, 39, 27, 57], "cuda") == 2
    assert auto_bin([59, 39, 23.9], "cpu") == 2
    five = [25, 17, 12, 24, 8]        # the simulator's five species
    assert auto_bin(five, "cuda") == 1          # a GPU trains long enough for tiny at full resolution
    assert auto_bin(five, "cpu") == 2           # a CPU budget does not (every species lost at bin 1)
    assert auto_bin([15.9], "cuda") == 1
    assert auto_bin([7.9], "cpu") == 1
    assert auto_bin([7.9, 10, 11.9], "cpu") == 1      # small particles alone stay at full resolution
    assert auto_bin([18, 13, 9, 18, 6], "cpu") == 2   # one small class does not hold the rest at bin 1
    assert auto_bin([18, 13, 9, 18, 6], "cuda") == 1


def test_automatic_patch_holds_the_largest_particle(tmp_path):
    from picker3d.engine.modelfile import load_model
    from picker3d.engine.training import train
    from picker3d.engine.training.config import auto_batch, auto_patch
    assert auto_patch([12.5, 8.5, 6, 12, 4]) == (32, 8)       # the simulator's species at bin 2
    assert auto_patch([25, 17, 12, 24, 8]) == (40, 4)         # ... at bin 1: 25 + 8 voxels need 40
    assert auto_patch([30], sparse=True) == (48, 4)
    # an explicit patch without a batch follows the same rule as the automatic one
    assert (auto_batch(24), auto_batch(32), auto_batch(40), auto_batch(32, sparse=True)) == (8, 8, 4, 4)
    # train() without patch and batch uses the rule, says so and records it
    vol, tab = small_dataset(31)
    lines = []
    out = str(tmp_path / "m.pt")
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, epochs=1, iters_per_epoch=1, tile=32, pad=4,
          channels=(4, 8), bin=2, log=lines.append)
    assert "patches 32³ in batches of 8" in lines
    assert load_model(out)[1]["patch"] == 32 and load_model(out)[1]["batch"] == 8
    assert load_model(out)[1]["lr"] == 3e-3          # no lr given: the complete-label default
    assert load_model(out)[1]["rotation"] == 20.0    # ... and rotation
    # resuming keeps the interrupted run's patches; a checkpoint from before the automatic
    # choice has none recorded, and those runs used 48 x 4
    ck = torch.load(out + ".ckpt", weights_only=False)
    assert (ck["patch"], ck["batch"]) == (32, 8)
    del ck["patch"], ck["batch"]
    torch.save(ck, out + ".ckpt")
    lines.clear()
    train([vol], [tab], ["barrel"], {"barrel": 17}, out, epochs=2, iters_per_epoch=1, tile=32, pad=4,
          channels=(4, 8), bin=2, log=lines.append, resume=True)
    assert "patches 48³ in batches of 4 (as the interrupted run)" in lines
    assert load_model(out)[1]["patch"] == 48


def test_label_diameters_grow_to_the_minimum_but_not_past_the_cap(tmp_path):
    """The benchmark's classes at bin 2: --min-mask 9 grows barrel and shell to 9; the cap of
    1.5x stops the 4-voxel tiny at 6 (9 without the cap); a bad ratio is named."""
    from picker3d.engine.errors import InputError
    from picker3d.engine.training import train
    from picker3d.engine.training.config import label_diameters
    binned = {"large": 12.5, "barrel": 8.5, "shell": 6.0, "rod": 12.0, "tiny": 4.0}
    assert label_diameters(binned, 9.0, 1.5) == {"large": 12.5, "barrel": 9.0, "shell": 9.0, "rod": 12.0,
                                                 "tiny": 6.0}
    assert label_diameters(binned, 9.0, 0)["tiny"] == 9.0
    assert label_diameters(binned, 3.0, 1.5) == binned
    vol, tab = small_dataset(10)
    with pytest.raises(InputError, match=r"--max-mask-ratio: 0.5 must be 1 or more"):
        train([vol], [tab], ["barrel"], {"barrel": 17}, str(tmp_path / "m.pt"), max_mask_ratio=0.5,
              log=lambda m: None, bin=1)

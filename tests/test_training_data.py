"""Training data: patches, hard negatives, hold-out, shifted binning grids."""
import numpy as np

from picker3d.engine.formats.table import CoordTable


def test_a_training_patch_longer_than_the_volume_is_completed_with_zeros():
    # as picking completes a tile longer than its axis: the normalised mean, nothing mirrored
    from picker3d.engine.training.data import TomogramData, sample_batch
    vol = np.random.default_rng(4).standard_normal((8, 24, 24)).astype(np.float32)
    data = [TomogramData(vol, CoordTable([[12, 12, 4]], ["a"]), ["a"], {"a": 6.0})]
    x, y, _, _ = sample_batch(data, np.random.default_rng(0), 16, 4, 1)
    for patch, lab in zip(x[:, 0].numpy(), y.numpy()):
        filled = np.abs(patch).sum(axis=(1, 2)) > 0
        assert filled.sum() == 8 and (filled[:8].all() or filled[8:].all())   # a z-mirror may put it first
        assert not lab[~filled].any()


def test_hard_negatives_avoid_annotated_particles():
    from picker3d.engine.simulation.dataset import simulate_tomogram
    from picker3d.engine.training.data import TomogramData
    s = simulate_tomogram(shape=(48, 96, 96), seed=5, snr=1.0, species=["barrel"], counts={"barrel": 6},
                          crowders=8, vesicles=0, membranes=0, gold=0)
    tab = CoordTable.from_rows(s["rows"])
    d = TomogramData(s["tomogram"], tab, ["barrel"], {"barrel": 17.0})
    assert len(d.negatives) > 0
    dist = np.linalg.norm(d.negatives[:, None, ::-1] - tab.xyz[None], axis=2).min(axis=1)
    assert dist.min() > 0.75 * 17


def test_hold_out_keeps_labels_drawn_before_the_cut():
    from picker3d.engine.training.data import TomogramData, hold_out
    vol = np.random.default_rng(0).normal(size=(16, 40, 80)).astype(np.float32)
    xs = [10, 58, 61, 75]
    table = CoordTable(np.array([[x, 20, 8] for x in xs], float), ["a"] * 4)
    d = TomogramData(vol, table, ["a"], {"a": 8.0})
    before, volume = d.labels.copy(), d.volume.copy()
    val_volume, val_table = hold_out(d, 0.25, 4.0)
    # the far quarter of x (the longer in-plane axis) is held out
    assert d.volume.shape == (16, 40, 60) and val_volume.shape == (16, 40, 20)
    np.testing.assert_array_equal(d.volume, volume[..., :60])
    np.testing.assert_array_equal(val_volume, volume[..., 60:])
    # the particle centred at x = 61 still marks its voxels left of the cut (no false background)
    np.testing.assert_array_equal(d.labels, before[..., :60])
    assert d.labels[8, 20, 58] == 1 and d.labels[8, 20, 59] == 1
    assert d.table.xyz[:, 0].tolist() == [10, 58] and d.cls.tolist() == [1, 1]
    # validation: particles centred beyond the cut, and those reaching it, in the part's frame
    assert val_table.xyz[:, 0].tolist() == [-2, 1, 15]
    assert (d.negatives[:, 2] < 60).all()
    # too narrow to hold a part out
    small = TomogramData(vol[:, :20, :24], CoordTable(np.array([[5.0, 10, 8]]), ["a"]), ["a"], {"a": 8.0})
    assert hold_out(small, 0.25, 4.0) is None


def test_binning_phase_copies_put_each_particle_where_its_shifted_grid_sees_it():
    from picker3d.engine.training.data import binning_phase_copies
    # one bright blob off every axis's centre (x, y, z differ so a swapped axis shows)
    z, y, x = np.mgrid[:32, :40, :48].astype(np.float32)
    xyz = np.array([[29.0, 17.0, 11.0]])
    vol = np.exp(-((x - xyz[0, 0]) ** 2 + (y - xyz[0, 1]) ** 2 + (z - xyz[0, 2]) ** 2) / (2 * 2.0 ** 2))
    table = CoordTable(xyz, ["a"])
    copies = binning_phase_copies([vol], [table], 2, ["a"], {"a": 5.0}, "ball", 0.0, 4.0)
    assert len(copies) == 7                    # offsets 0 or 1 per axis, all but (0, 0, 0)
    shapes = set()
    for d in copies:
        w = np.clip(d.volume - np.median(d.volume), 0, None) ** 2
        centroid = np.array([(w * g).sum() / w.sum() for g in np.indices(w.shape)])[::-1]   # x, y, z
        assert np.abs(centroid - d.table.xyz[0]).max() < 0.1, (d.name, centroid, d.table.xyz[0])
        assert d.labels[tuple(np.round(d.table.xyz[0][::-1]).astype(int))] == 1
        shapes.add(d.volume.shape)
    # a shifted grid loses the last block on the shifted axes
    assert shapes == {(a, b, c) for a in (16, 15) for b in (20, 19) for c in (24, 23)} - {(16, 20, 24)}


def test_binning_phase_copies_hold_out_the_part_the_unshifted_grid_holds_out():
    from picker3d.engine.training.data import binning_phase_copies, holdout_split
    vol = np.random.default_rng(1).normal(size=(16, 40, 40)).astype(np.float32)     # square in-plane
    table = CoordTable(np.array([[6.0, 20, 8], [33.0, 20, 8]]), ["a", "a"])
    ax, cut = holdout_split((8, 20, 20), 0.25)
    assert (ax, cut) == (2, 15)                                  # x, binned voxels 15-19 held out
    copies = binning_phase_copies([vol], [table], 2, ["a"], {"a": 4.0}, "ball", 0.25, 4.0)
    for d in copies:
        ox = 1 if d.name.endswith(", 1)") else 0                # the copy's grid offset along x
        # cut along x like the unshifted grid (a shifted y alone would make y the longer axis)
        # and never reaching into original voxel 2 * cut = 30, where the held-out part begins
        assert d.volume.shape[2] == cut - ox and ox + 2 * d.volume.shape[2] <= 2 * cut, d.name
        assert d.volume.shape[1] in (20, 19)
        assert d.table.xyz[:, 0].max() < d.volume.shape[2] and len(d.table) == 1      # x = 33 held out

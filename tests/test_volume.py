"""Volumes: binning, binned reading, robust normalisation."""
import numpy as np
import pytest


def test_binning_coordinates_round_trip_and_block_mean():
    from picker3d.engine.picking.tiles import upsample
    from picker3d.engine.volume import bin_volume, from_binned, to_binned
    xyz = np.array([[0.0, 0.0, 0.0], [10.5, 3.25, 7.0], [63.0, 1.0, 2.0]])
    np.testing.assert_allclose(from_binned(to_binned(xyz, 2), 2), xyz, atol=1e-12)
    # voxels 0 and 1 are binned into voxel 0, whose centre is at 0.5 in the original frame
    np.testing.assert_allclose(from_binned(np.zeros((1, 3)), 2), [[0.5, 0.5, 0.5]])
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    b = bin_volume(vol, 2)
    assert b.shape == (2, 3, 3)
    assert b[0, 0, 0] == pytest.approx(vol[:2, :2, :2].mean())
    assert upsample(b, 2, vol.shape).shape == vol.shape


def test_read_binned_equals_binning_the_volume(tmp_path):
    from picker3d.engine.formats.mrc import read_binned, read_volume, write_volume
    from picker3d.engine.volume import bin_volume
    vol = np.random.default_rng(3).standard_normal((21, 30, 34)).astype(np.float32)
    write_volume(str(tmp_path / "v.mrc"), vol, 7.5)
    binned, vs, shape = read_binned(str(tmp_path / "v.mrc"), 2, chunk_bytes=1)   # a plane pair at a time
    assert vs == pytest.approx(7.5) and shape == vol.shape
    np.testing.assert_allclose(binned, bin_volume(read_volume(str(tmp_path / "v.mrc"))[0], 2), atol=1e-6)


def test_normalisation_ignores_gold_beads_and_constant_bands():
    from picker3d.engine.volume import normalize, volume_stats
    rng = np.random.default_rng(0)
    clean = rng.normal(3.0, 2.0, size=(40, 64, 64)).astype(np.float32)
    mean, std = volume_stats(clean)
    assert mean == pytest.approx(3.0, abs=0.02) and std == pytest.approx(2.0, rel=0.01)   # plain estimate kept
    bad = clean.copy()
    gold = rng.choice(bad.size, bad.size // 500, replace=False)                      # 0.2 % of the voxels
    bad.reshape(-1)[gold] = rng.normal(-60.0, 5.0, size=len(gold))
    bad[:, :, :4] = 40.0                                                              # a constant band
    plain_std = float(bad.std())
    assert plain_std > 2.5 * std                       # what the plain estimate would have used
    mean_b, std_b = volume_stats(bad)
    assert mean_b == pytest.approx(3.0, abs=0.1) and std_b == pytest.approx(2.0, rel=0.06)
    z = normalize(bad)
    assert z.dtype == np.float32 and np.median(z[:, :, 4:]) == pytest.approx(0.0, abs=0.05)
    assert z.min() == pytest.approx(-3.0) and z.max() == pytest.approx(3.0)          # gold and band clipped
    assert np.array_equal(normalize(clean), np.clip((clean - mean) / (std + 1e-6), -3, 3))
    assert volume_stats(np.full((8, 8, 8), 5.0)) == (5.0, 0.0)                        # constant volume: no crash

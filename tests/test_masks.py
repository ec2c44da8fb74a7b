import math

import numpy as np
import pytest

from picker3d.engine.errors import InputError
from picker3d.engine.formats.table import CoordTable
from picker3d.engine.masks import gaussian_heatmap, label_mask, mask_offsets


def _subvoxel_volume(pred, r, n=400_000, seed=0):
    """Independent estimate of a shape's volume by Monte Carlo over the cube [-r, r]^3."""
    p = np.random.default_rng(seed).uniform(-r - 0.5, r + 0.5, size=(n, 3))
    return pred(p).mean() * (2 * r + 1) ** 3


@pytest.mark.parametrize("d", [7, 9, 12, 23])
def test_cubic_count_is_exact(d):
    r = d / 2
    off, _ = mask_offsets(d, "cubic")
    assert len(off) == (2 * math.floor(r) + 1) ** 3


@pytest.mark.parametrize("d", [9, 12, 23])
def test_ball_and_tball_counts_match_analytic_shapes(d):
    r = d / 2
    ball, _ = mask_offsets(d, "ball")
    assert abs(len(ball) - 4 / 3 * math.pi * r ** 3) / (4 / 3 * math.pi * r ** 3) < 0.15
    tball, _ = mask_offsets(d, "tball")
    # truncated ball = sphere of radius sqrt(2) r intersected with the cube |x|,|y|,|z| <= floor(r)
    rf = math.floor(r)
    inter = _subvoxel_volume(lambda p: (np.abs(p) <= rf + 0.5).all(1) & ((p ** 2).sum(1) < 2 * r * r), rf)
    assert abs(len(tball) - inter) / inter < 0.12
    assert len(ball) < len(tball) < len(mask_offsets(d, "cubic")[0])


def test_label_values_and_overlap_goes_to_nearest_centre():
    t = CoordTable([[10, 10, 10], [16, 10, 10], [30, 30, 30]], classes=["a", "a", "b"])
    m = label_mask((40, 40, 40), t, {"a": 10, "b": 6}, "ball")
    assert m[10, 10, 10] == 1 and m[30, 30, 30] == 2 and m[0, 0, 0] == 0
    # voxel x=12 is nearer to the first centre, x=14 to the second: both label 1, no gaps
    assert m[10, 10, 12] == 1 and m[10, 10, 14] == 1
    # order independence
    t2 = t.subset([1, 0, 2])
    assert np.array_equal(m, label_mask((40, 40, 40), t2, {"a": 10, "b": 6}, "ball"))


def test_sphere_uses_per_class_diameter():
    t = CoordTable([[20, 20, 20]], classes=["big"])
    small = (label_mask((41, 41, 41), t, {"big": 6}, "sphere") > 0).sum()
    big = (label_mask((41, 41, 41), t, {"big": 14}, "sphere") > 0).sum()
    assert big > 8 * small


def test_gaussian_heatmap_peaks_at_centres():
    t = CoordTable([[10.0, 12.0, 14.0]])
    h = gaussian_heatmap((30, 30, 30), t, {"*": 12})
    assert h.max() == pytest.approx(1.0) and np.unravel_index(h.argmax(), h.shape) == (14, 12, 10)
    sigma = 2.0
    assert h[14, 12, 12] == pytest.approx(math.exp(-4 / (2 * sigma ** 2)), rel=1e-4)


def test_unknown_class_is_named():
    t = CoordTable([[1, 1, 1]], classes=["rod"])
    with pytest.raises(InputError, match="no diameter for class\\(es\\) rod"):
        label_mask((5, 5, 5), t, {"large": 5}, "tball")

import numpy as np
import pytest

from picker3d.engine.formats.table import CoordTable
from picker3d.engine.metrics import evaluate, evaluate_tomograms, shrec_hits


@pytest.fixture
def ref():
    rng = np.random.default_rng(7)
    xyz = np.stack([np.arange(20) * 12.0 + 5, rng.uniform(5, 90, 20), rng.uniform(5, 40, 20)], 1)
    return CoordTable(xyz, classes=["a", "b"] * 10)


D = {"a": 10, "b": 6}


def test_reference_against_itself_is_perfect(ref):
    r = evaluate(ref, ref, D)
    assert r["f1"] == 1.0 and r["mean_class_f1"] == 1.0 and r["ap"] == pytest.approx(1.0)
    assert r["czii_fbeta"] == 1.0 and r["mean_distance"] == 0.0


def test_shift_beyond_radius_gives_zero(ref):
    moved = CoordTable(ref.xyz + [0, 0, 6.0], ref.classes)   # radius: 5 for a, 3 for b
    r = evaluate(moved, ref, D)
    assert r["f1"] == 0.0 and r["tp"] == 0
    inside = CoordTable(ref.xyz + [0, 0, 2.0], ref.classes)
    assert evaluate(inside, ref, D)["f1"] == 1.0


def test_duplicates_lower_precision(ref):
    dup = CoordTable(np.concatenate([ref.xyz, ref.xyz + 0.5]), np.concatenate([ref.classes, ref.classes]))
    r = evaluate(dup, ref, D)
    assert r["recall"] == 1.0 and r["precision"] == pytest.approx(0.5) and r["fp"] == 20
    assert r["czii_fbeta"] < 1.0


def test_wrong_class_costs_class_f1_not_localisation(ref):
    swapped = CoordTable(ref.xyz, np.where(ref.classes == "a", "b", "a"))
    r = evaluate(swapped, ref, D)
    assert r["f1"] == 1.0 and r["mean_class_f1"] == 0.0


def test_ap_rewards_scores_that_rank_true_picks_first(ref):
    junk = ref.xyz + [0, 0, 30.0]
    xyz = np.concatenate([ref.xyz, junk])
    good = CoordTable(xyz, scores=np.r_[np.ones(20), np.zeros(20)])
    bad = CoordTable(xyz, scores=np.r_[np.zeros(20), np.ones(20)])
    assert evaluate(good, ref, D)["ap"] == pytest.approx(1.0)
    assert evaluate(bad, ref, D)["ap"] < 0.6


def test_hungarian_beats_greedy_on_a_crossing():
    ref = CoordTable([[0, 0, 0], [4, 0, 0]])
    pred = CoordTable([[2.2, 0, 0], [-1.5, 0, 0]])
    # greedy by distance would pair pred0-ref1 (1.8) and leave pred1 unmatched
    assert evaluate(pred, ref, radius=2.5)["tp"] == 2


def test_shrec_hits_with_occupancy():
    occ = np.zeros((10, 10, 10), dtype=np.int32)
    occ[2:5, 2:5, 2:5] = 1
    occ[6:9, 6:9, 6:9] = 2
    ref = CoordTable([[3, 3, 3], [7, 7, 7]], classes=["a", "b"])
    pred = CoordTable([[3, 3, 3], [4, 4, 4], [0, 0, 9]], classes=["a", "b", "a"])
    h = shrec_hits(pred, ref, occ)
    assert h == {"hits": 1, "duplicates": 1, "outside": 1, "missed": 1, "class_correct": 1, "recall": 0.5}


def test_match_by_class_needs_the_right_class():
    from picker3d.engine.metrics import match_by_class
    ref = CoordTable(np.array([[10.0, 10, 10], [30, 30, 30]]), ["a", "b"], None)
    pred = CoordTable(np.array([[10.5, 10, 10], [30, 30.5, 30], [50, 50, 50]]), ["a", "a", "b"], [1, 1, 1])
    pred_hit, ref_hit = match_by_class(pred, ref, np.array([3.0, 3.0]))
    assert pred_hit.tolist() == [True, False, False]
    assert ref_hit.tolist() == [True, False]
    r = evaluate(pred, ref, {"a": 6, "b": 6})
    assert r["tp"] == 2 and r["class_aware"]["tp"] == 1 and r["class_aware"]["fn"] == 1


def test_matched_filter_dprime_follows_signal_norm_over_noise():
    """In white noise, the oracle's d' is ||template|| / sigma; a particle-free box gives ~0."""
    from picker3d.engine.metrics import matched_filter_dprime
    rng = np.random.default_rng(3)
    clean = np.zeros((40, 64, 64))
    zz, yy, xx = np.mgrid[-4:5, -4:5, -4:5]
    ball = (zz ** 2 + yy ** 2 + xx ** 2 <= 9).astype(float)
    clean[16:25, 28:37, 28:37] = 0.5 * ball
    noisy = clean + rng.normal(0, 1.0, clean.shape)
    template = clean[16:25, 28:37, 28:37] - clean[16:25, 28:37, 28:37].mean()
    expected = np.linalg.norm(template) / 1.0
    d = matched_filter_dprime(noisy, clean, (20, 32, 32), 4, np.random.default_rng(0))
    assert expected > 3 and abs(d - expected) < 0.3 * expected
    empty = matched_filter_dprime(noisy, np.roll(clean, -20, axis=2), (20, 32, 12), 4,
                                  np.random.default_rng(0))
    assert abs(empty) < 3.0 < d
    with pytest.raises(ValueError, match="border"):
        matched_filter_dprime(noisy, clean, (2, 32, 32), 4, np.random.default_rng(0))


def test_tomograms_pool_their_matches_and_no_match_crosses_between_them(ref):
    """Two tomograms: the picks of the second sit where the first's particles are, so a
    plain concatenation would match them; pooled, they stay false positives."""
    half = ref.subset(np.arange(10))
    pairs = {"t1": (half, half), "t2": (CoordTable(half.xyz + [0, 0, 0.5], half.classes), ref.subset(np.arange(10, 20))),
             "t3": (None, half)}
    res = evaluate_tomograms(pairs, D)
    per = res["per_tomogram"]
    assert per["t1"]["tp"] == 10 and per["t2"]["tp"] == 0 and per["t3"]["fn"] == 10
    overall = res["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"]) == (10, 10, 20)
    assert overall["f1"] == pytest.approx(2 * 10 / (2 * 10 + 10 + 20))


def test_challenge_score_on_a_hand_computed_case():
    """Two runs, two objects (radius 10 voxels: a pick counts within 5). Object a: run 1 has
    references at 0 and 100, picks at 3 (hit), 4 (a second pick on the same particle: a false
    pick), 50 (false); run 2 has reference 0, pick 6 (too far: 6 > 5). Pooled: tp 1, fp 3,
    fn 2; P 1/4, R 1/3, F4 = 17 P R / (16 P + R) = (17/12) / (4 + 1/3) = 17/52. Object b
    (weight 3): one reference, one pick on it: F4 = 1. Score = (17/52 + 3) / 4."""
    from picker3d.engine.metrics import challenge_score

    def t(xs, cls):
        return CoordTable([[x, 0, 0] for x in xs], [cls] * len(xs), [1.0] * len(xs))

    def merge(*ts):
        return CoordTable(np.concatenate([x.xyz for x in ts]), np.concatenate([x.classes for x in ts]))

    runs = {"r1": (merge(t([3, 4, 50], "a"), t([200], "b")), merge(t([0, 100], "a"), t([201], "b"))),
            "r2": (t([6], "a"), t([0], "a"))}
    res = challenge_score(runs, {"a": 10.0, "b": 10.0}, {"a": 1.0, "b": 3.0})
    a = res["per_object"]["a"]
    assert (a["tp"], a["fp"], a["fn"]) == (1, 3, 2)
    assert a["fbeta"] == pytest.approx(17 / 52)
    assert res["per_object"]["b"]["fbeta"] == pytest.approx(1.0)
    assert res["score"] == pytest.approx((17 / 52 + 3) / 4)

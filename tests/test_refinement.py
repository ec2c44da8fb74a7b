"""Classes from aligned averages: anisotropy features, merging one species seen twice,
multi-reference refinement from a wrong start."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from picker3d.engine.classification.boxes import normalize_box
from picker3d.engine.classification.descriptors import _shell_index, radial_profiles, shape_features
from picker3d.engine.classification.disca import disca_on_boxes
from picker3d.engine.classification.mixture import clustering_scores
from picker3d.engine.classification.refinement import refine_and_merge
from picker3d.engine.options import ClassifyOptions
from picker3d.engine.simulation.dataset import simulate_subtomograms


def _rods_and_globules(n=24, box=24, noise=0.6, seed=0):
    """Rods in random orientations, and globules with exactly the rods' mean radial profile:
    radial profiles alone cannot tell them apart, the shape can."""
    rng = np.random.default_rng(seed)
    c = (box - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(box) - c] * 3, indexing="ij"), -1)[..., ::-1]   # x, y, z
    rods = []
    for i in range(n):
        p = grid @ Rotation.random(random_state=seed * 100 + i).as_matrix()
        rods.append(((p[..., 0] ** 2 + p[..., 1] ** 2 < 2.5 ** 2) & (np.abs(p[..., 2]) < 9)).astype(np.float32))
    rods = np.asarray(rods)
    shell = _shell_index(box, np.full(3, c))
    counts = np.bincount(shell)
    profile = np.bincount(shell, rods.mean(0).ravel(), minlength=len(counts)) / np.maximum(counts, 1)
    globule = profile[shell].reshape((box,) * 3).astype(np.float32)
    stack = np.concatenate([rods, np.repeat(globule[None], n, 0)])
    stack = stack + rng.normal(0, noise * stack.std(), stack.shape).astype(np.float32)
    return stack, np.array(["rod"] * n + ["globule"] * n)


def test_shape_features_split_a_rod_from_a_globule_of_the_same_radial_profile():
    stack, truth = _rods_and_globules()
    profiles = radial_profiles(stack)
    # the same radial profile: the two kinds differ far less than within one
    gap = np.abs(profiles[truth == "rod"].mean(0) - profiles[truth == "globule"].mean(0)).max()
    assert gap < 0.1 * np.abs(profiles).max()
    ratios = shape_features(stack)[:, -2:]
    assert ratios[truth == "rod", 0].max() < ratios[truth == "globule", 0].min()      # inertia: elongated
    common = dict(k_range=range(2, 4), bin=1, contrast_weight=0, split_separation=0, align=False)
    with_shape = disca_on_boxes(stack, ClassifyOptions(**common), log=lambda *_: None)["labels"]
    without = disca_on_boxes(stack, ClassifyOptions(shape_weight=0, **common), log=lambda *_: None)["labels"]
    assert clustering_scores(truth, with_shape)["homogeneity"] > 0.9
    assert clustering_scores(truth, without)["homogeneity"] < 0.5


@pytest.fixture(scope="module")
def two_species():
    stack, rows = simulate_subtomograms(20, box=24, seed=4, snr=0.3, species=["large", "rod"], voxel_size=12.0)
    return normalize_box(stack), np.array([r["class"] for r in rows])


def test_two_classes_of_one_species_are_merged_back(two_species):
    stack, truth = two_species
    labels = (truth == "rod").astype(int)
    large = np.flatnonzero(labels == 0)
    labels[large[::2]] = 2                      # 'large' seen as two classes of 10
    res = refine_and_merge(stack, labels, min_size=5, log=lambda *_: None)
    assert len(res["merges"]) == 1 and {res["merges"][0]["into"], res["merges"][0]["merged"]} == {0, 2}
    assert res["merges"][0]["confusion"] >= 0.2
    s = clustering_scores(truth, res["labels"])
    assert s["k_found"] == 2 and s["accuracy"] >= 0.95, s


def test_refinement_recovers_the_classes_from_a_wrong_start(two_species):
    stack, truth = two_species
    labels = (truth == "rod").astype(int)
    rng = np.random.default_rng(0)
    wrong = rng.choice(len(labels), size=len(labels) // 4, replace=False)
    labels[wrong] = 1 - labels[wrong]           # a quarter of the picks in the other class
    assert clustering_scores(truth, labels)["accuracy"] <= 0.8
    res = refine_and_merge(stack, labels, min_size=5, merge=False, refine=True, log=lambda *_: None)
    assert clustering_scores(truth, res["labels"])["accuracy"] >= 0.95
    assert len(res["moves"]) >= 2 and res["moves"][-1] < 0.05
    assert res["matrices"].shape == (len(labels), 3, 3) and res["shifts"].shape == (len(labels), 3)


def test_classes_below_the_floor_are_dissolved_into_the_others(two_species):
    stack, truth = two_species
    labels = (truth == "rod").astype(int)
    labels[np.flatnonzero(labels == 0)[:3]] = 2          # a class of three 'large' picks
    res = refine_and_merge(stack, labels, min_size=5, merge=False, log=lambda *_: None)
    assert res["labels"].max() == 1
    assert clustering_scores(truth, res["labels"])["accuracy"] >= 0.95

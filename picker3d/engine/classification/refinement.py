"""Classes from their aligned averages, after a clustering: small classes dissolved, two
classes of one species merged, and (optionally) multi-reference refinement — what RELION and
Dynamo do after an initial classification, sized for a few hundred picks on a CPU.

- **Start**: each class's members aligned reference-free (:func:`align_class`, coarse search
  only) on boxes binned to about ``COARSE`` voxels.
- **Scores**: every pick aligned to every class average (the constrained correlation with the
  missing wedge of :mod:`.alignment`: the whole rotation grid on the coarse boxes, then a local
  grid on boxes of about ``FINE`` voxels, whose correlation is the score).
- **Small classes**: below ``min_size`` members a class is dissolved, smallest first, its
  picks going to the class they score best; the other picks keep their class.
- **Merging**: two classes are merged when at least ``CONFUSION`` of one's picks score higher
  against the other's average than their own, and the two averages, aligned onto each other,
  agree at least as well as the noisier class's own two half averages.
- **Refinement** (``refine``): every pick moves to the class it scores best, the averages are
  rebuilt, until fewer than ``tol`` move.

Every agreement is a Pearson correlation inside a soft sphere of averages low-passed the same
way, so that one class's agreement with another and with itself are on one scale.
Measurements: docs/classification.md.
"""
import math

import numpy as np
from scipy.spatial.transform import Rotation

from .alignment import (
    _prepare,
    align_class,
    local_rotations,
    rotation_grid,
    search_global,
    search_local,
    soft_sphere,
    transform_volumes,
    wedge_mask,
    wedge_weighted_average,
)
from .boxes import bin_boxes, normalize_box

COARSE, FINE = 12, 20   # binned box sides (voxels): global searches, and local searches with the scores
LOWPASS = 0.7           # Gaussian sigma (binned voxels) of every reference and compared average
# on 250 picks of five species at SNR 0.05 (box 38), every pick scored against the averages of the
# true classes went to its own species' class 79 % of the time on 12-voxel boxes, 97 % on 19-voxel
# ones: the scores need the finer boxes; the global search, the cost, is done on the coarse ones.
MIN_SIZE = 8            # smaller classes are dissolved: too few members to judge by their average
CONFUSION = 0.2         # two classes whose picks prefer the other's average this often may be one species
# (250 picks of five species: 23-45 % for classes of one species, at most 18 % for two species)


def binned(stack, size):
    """``stack`` (n, b, b, b) binned to about ``size`` voxels and normalised; the factor."""
    factor = max(1, int(round(stack.shape[-1] / float(size))))
    return normalize_box(bin_boxes(stack, factor)), factor


class _Scale:
    """Boxes at one binning, masked, with their wedge and mask."""

    def __init__(self, stack, size, tilt_range):
        self.boxes, self.factor = binned(stack, size)
        b = self.boxes.shape[-1]
        self.wedge, self.mask = wedge_mask(b, tilt_range), soft_sphere(b)
        self.masked = self.boxes * self.mask
        self.max_shift = max(1, b // 6)

    def average(self, members, R, t):
        """Members' wedge-weighted average (``t`` in full-size voxels) and its coverage."""
        return wedge_weighted_average(self.boxes[members], R[members], t[members] / self.factor, self.wedge)


class _Classes:
    """Labels, each pick's alignment onto its class average (R, t in full-size voxels) and the
    averages at the fine scale; -1: a pick without a class yet."""

    def __init__(self, coarse, fine, labels):
        self.coarse, self.fine = coarse, fine
        self.labels = np.asarray(labels).copy()
        n = len(self.labels)
        self.R, self.t = np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3))
        self.avg, self.cov = {}, {}
        self.memory = {}           # class -> every pick's rotation at its last alignment to it
        self.scores = {}           # class -> every pick's score against it at the last reassignment

    def classes(self):
        return sorted(self.avg)

    def rebuild(self, classes=None):
        present = set(self.labels[self.labels >= 0].tolist())
        for c in (present if classes is None else classes):
            self.avg[c], self.cov[c] = self.fine.average(np.flatnonzero(self.labels == c), self.R, self.t)
        for c in [c for c in self.avg if c not in present]:
            del self.avg[c], self.cov[c]
            self.memory.pop(c, None)

    def halves_agreement(self, c, rng):
        """Correlation of two random halves of class ``c``'s members, each averaged."""
        m = rng.permutation(np.flatnonzero(self.labels == c))
        if len(m) < 4:
            return 1.0
        a = self.fine.average(np.sort(m[: len(m) // 2]), self.R, self.t)[0]
        b = self.fine.average(np.sort(m[len(m) // 2:]), self.R, self.t)[0]
        return _correlation(a, b, self.fine.mask)


def _correlation(a, b, mask):
    inside = mask > 0.5
    u, v = _prepare(a, mask, LOWPASS)[inside], _prepare(b, mask, LOWPASS)[inside]
    return float(np.corrcoef(u, v)[0, 1])


def _local(scale, reference, coverage, starts, step):
    """Every pick's best rotation within a step of its start (n, 3, 3), shift (full-size
    voxels) and score against ``reference``."""
    local = np.stack([local_rotations(Rotation.from_matrix(m), step, 1).as_matrix() for m in starts])
    pick, shift, score = search_local(scale.masked, _prepare(reference, scale.mask, LOWPASS), local, scale.wedge,
                                      scale.max_shift, coverage=coverage)
    return local[np.arange(len(starts)), pick], shift * scale.factor, score


def _align_to_class(cls, c, grid, step):
    """Every pick aligned to class ``c``'s average: from its last alignment to it (local, a
    sixth of ``step``) or, the first time, over the whole ``grid`` on the coarse boxes, then
    locally on the fine ones at a third of ``step``. Returns (R, t, score)."""
    if c in cls.memory:
        starts, local_step = cls.memory[c], step / 6
    else:
        members = np.flatnonzero(cls.labels == c)
        ref, cov = cls.coarse.average(members, cls.R, cls.t)
        rot, _, _ = search_global(cls.coarse.masked, _prepare(ref, cls.coarse.mask, LOWPASS), grid,
                                  cls.coarse.wedge, cls.coarse.max_shift, coverage=cov)
        starts, local_step = grid.as_matrix()[rot], step / 3
    R, t, score = _local(cls.fine, cls.avg[c], cls.cov[c], starts, local_step)
    cls.memory[c] = R
    return R, t, score


def _refine(cls, grid, step, min_size, tol, max_iterations, log, move_all=True, k_min=1):
    """Reassign picks to their best-correlating class average until fewer than ``tol`` move;
    dissolve classes smaller than ``min_size``. ``move_all`` False: only picks without a class
    (or whose class was dissolved) move. Returns the per-iteration moves."""
    moves = []
    for it in range(max_iterations):
        classes = cls.classes()
        aligned = [_align_to_class(cls, c, grid, step) for c in classes]
        scores = np.stack([a[2] for a in aligned], 1)
        cls.scores = dict(zip(classes, scores.T.copy()))
        if not move_all:      # a pick keeps its class: every other class scores below it
            index = {c: j for j, c in enumerate(classes)}
            own = np.array([index.get(c, -1) for c in cls.labels])
            keep = own >= 0
            scores[keep] = np.where(np.arange(len(classes))[None] == own[keep, None], 1e3, scores[keep])
        best = np.argmax(scores, axis=1)
        # classes too small to hold a species (or a reliable average): their picks go elsewhere
        while True:
            sizes = np.bincount(best, minlength=len(classes))
            small = [j for j in range(len(classes)) if 0 < sizes[j] < min_size]
            if not small or np.count_nonzero(sizes) <= k_min:
                break
            drop = min(small, key=lambda j: sizes[j])
            scores[:, drop] = -np.inf
            best = np.argmax(scores, axis=1)
            log(f"refinement: class {classes[drop] + 1} fell below {min_size} members: dissolved")
        new = np.asarray(classes)[best]
        moved = float(np.mean(new != cls.labels))
        cls.labels = new
        cls.R = np.stack([aligned[j][0][i] for i, j in enumerate(best)])
        cls.t = np.stack([aligned[j][1][i] for i, j in enumerate(best)])
        cls.rebuild()
        moves.append(moved)
        kept = [cls.scores[c][i] for i, c in enumerate(new)]
        log(f"refinement iteration {it + 1}: {100 * moved:.1f} % of the picks moved; {len(cls.avg)} classes, "
            f"mean score {np.mean(kept):.3f}")
        if moved < tol:
            break
    return moves


def _pair_alignment(cls, a, b, grid, step):
    """Class ``b``'s average aligned onto ``a``'s (R, t in full-size voxels: avg_b = avg_a
    rotated by R, shifted by t) and their correlation."""
    fine, coarse = cls.fine, cls.coarse
    ref_a, cov_a = coarse.average(np.flatnonzero(cls.labels == a), cls.R, cls.t)
    vol_b = coarse.average(np.flatnonzero(cls.labels == b), cls.R, cls.t)[0]
    one = np.ones_like(coarse.wedge)
    rot, _, _ = search_global((vol_b * coarse.mask)[None], _prepare(ref_a, coarse.mask, LOWPASS), grid, one,
                              coarse.max_shift, coverage=cov_a)
    local = local_rotations(grid[int(rot[0])], step, 1).as_matrix()[None]
    pick, shift, _ = search_local((cls.avg[b] * fine.mask)[None], _prepare(cls.avg[a], fine.mask, LOWPASS), local,
                                  np.ones_like(fine.wedge), fine.max_shift, coverage=cls.cov[a])
    R = local[0, pick[0]]
    inv = R.T
    back = transform_volumes(cls.avg[b], inv[None], -(inv @ shift[0])[None])[0]
    return R, shift[0] * fine.factor, _correlation(cls.avg[a], back, fine.mask)


def _confusion(cls, a, b):
    """The larger of the fractions of ``a``'s members that fit ``b``'s average better than their
    own and of ``b``'s that fit ``a``'s better (from the last reassignment's scores)."""
    ma, mb = cls.labels == a, cls.labels == b
    return max(float(np.mean(cls.scores[b][ma] > cls.scores[a][ma])),
               float(np.mean(cls.scores[a][mb] > cls.scores[b][mb])))


def _merge_once(cls, grid, step, rng, cache, log):
    """Merge the two classes the picks confuse most, if (1) at least ``CONFUSION`` of one
    class's members fit the other's average better than their own and (2) the two aligned
    averages agree at least as well as the noisier class's own half averages. ``cache``:
    figures of classes unchanged since the last call. Returns the merge record or None."""
    classes = cls.classes()
    pairs = sorted(((_confusion(cls, a, b), a, b) for i, a in enumerate(classes) for b in classes[i + 1:]),
                   reverse=True)
    for confusion, a, b in pairs:
        if confusion < CONFUSION:
            return None
        for c in (a, b):
            if c not in cache:
                cache[c] = cls.halves_agreement(c, rng)
        if (a, b) not in cache:
            cache[a, b] = _pair_alignment(cls, a, b, grid, step)
        R, t, agreement = cache[a, b]
        bar = min(cache[a], cache[b])
        log(f"classes {a + 1} and {b + 1}: {100 * confusion:.0f} % of one's picks fit the other's average better; "
            f"aligned averages agree {agreement:.3f}, half averages {cache[a]:.3f}, {cache[b]:.3f}")
        if agreement >= bar:
            break
    else:
        return None
    members = np.flatnonzero(cls.labels == b)
    # member = avg_b(R_i^-1 (u - t_i)) and avg_b(y) = avg_a(R^-1 (y - t)): member = avg_a((R_i R)^-1 (u - t_i - R_i t))
    cls.t[members] = cls.t[members] + np.einsum("nij,j->ni", cls.R[members], t)
    cls.R[members] = cls.R[members] @ R
    cls.labels[members] = a
    # until the next reassignment, a pick's fit to the merged class is its fit to either part
    cls.scores[a] = np.maximum(cls.scores.pop(b), cls.scores[a])
    cls.memory.pop(a, None)
    cls.rebuild()
    for key in [k for k in cache if a in np.atleast_1d(k) or b in np.atleast_1d(k)]:
        del cache[key]
    log(f"merged class {b + 1} into {a + 1}")
    return {"into": int(a), "merged": int(b), "confusion": round(confusion, 3), "agreement": round(agreement, 4),
            "half_agreement": round(bar, 4)}


def _reference_free_starts(cls, tilt_range, step, seed):
    """Each class's members aligned to one another from scratch on the coarse boxes (coarse
    search only), the averages rebuilt."""
    for c in np.unique(cls.labels[cls.labels >= 0]):
        m = np.flatnonzero(cls.labels == c)
        if len(m) >= 2:
            r = align_class(cls.coarse.boxes[m], tilt_range=tilt_range, coarse_step=step, fine_iterations=0, starts=2,
                            coarse_iterations=2, seed=seed)
            cls.R[m], cls.t[m] = r["matrices"], r["shifts"] * cls.coarse.factor
    cls.memory.clear()
    cls.rebuild()


def refine_and_merge(stack, labels, tilt_range=60.0, step=45.0, min_size=None, tol=0.01, max_iterations=6,
                     merge=True, refine=False, k_min=1, seed=0, log=print):
    """Multi-reference refinement of ``labels`` (n,) over the normalised full-size boxes
    ``stack`` (n, b, b, b): picks of classes smaller than ``min_size`` are reassigned to the
    class average they fit best, then classes are merged, then (``refine``) every pick is
    reassigned, repeatedly. ``min_size`` (default max(8, 2 % of the picks)): smaller classes are
    dissolved. Neither dissolving nor merging leaves fewer than ``k_min`` classes. Returns a dict: ``labels`` (0..K-1, in the order of the classes given),
    ``merges`` (per merge: the classes, numbered as in ``labels`` given, and the two
    correlations), ``moves`` (fraction of picks moved per refinement iteration),
    ``matrices`` and ``shifts`` (per pick, onto its class average; full-size voxels)."""
    labels = np.asarray(labels, int)
    n = len(labels)
    min_size = max(MIN_SIZE, int(math.ceil(0.02 * n))) if min_size is None else int(min_size)
    rng = np.random.default_rng(seed)
    stack = np.asarray(stack, np.float32)
    coarse, fine = _Scale(stack, COARSE, tilt_range), _Scale(stack, FINE, tilt_range)
    # single picks have no average: they join a class at the first reassignment, where classes
    # below min_size are dissolved one at a time, smallest first, so that the fragments of one
    # species can gather into a class that stays
    sizes = np.bincount(labels)
    kept = np.flatnonzero(sizes >= 2)
    cls = _Classes(coarse, fine, np.where(np.isin(labels, kept), labels, -1))
    _reference_free_starts(cls, tilt_range, step, seed)
    grid = rotation_grid(step)
    # picks of dissolved classes find a class; the others stay until the classes are merged:
    # the averages of small, noisy classes attract picks that are not theirs (250 picks of five
    # species: homogeneity 0.87 -> 0.75 when every pick moved at this stage)
    moves = _refine(cls, grid, step, min_size, tol, 1, log, move_all=False, k_min=k_min)
    merges, cache = [], {}
    while merge and len(cls.avg) > k_min:
        record = _merge_once(cls, rotation_grid(step / 3), step / 6, rng, cache, log)
        if record is None:
            break
        merges.append(record)
    if refine:
        _reference_free_starts(cls, tilt_range, step, seed)
        moves += _refine(cls, grid, step, min_size, tol, max_iterations, log, k_min=k_min)
    old = cls.classes()
    renumber = {c: i for i, c in enumerate(old)}
    return {"labels": np.array([renumber[c] for c in cls.labels]), "merges": merges, "moves": moves,
            "old_classes": old, "matrices": cls.R, "shifts": cls.t}

"""Validation by picking: the score thresholds that maximise the F1 on the calibration tomograms."""
import numpy as np

from ..metrics import evaluate, match, match_by_class
from ..picking.peaks import find_particles

# Score thresholds calibration chooses from. Topped at 0.9: with ties going to the higher
# value, a grid reaching 0.95 or 0.98 lost on the benchmark (docs/picking.md, *Validation*).
THRESHOLD_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def calibrate(probs_list, tables, class_names, diameters, grid=None, t_segs=(0.3, 0.5), smooth=0.25,
              label_diameters=None):
    """Thresholds (t_seg, per-class score) maximising validation F1; returns (thr, f1, mean class F1)."""
    grid = list(grid if grid is not None else THRESHOLD_GRID)
    best = (None, -1.0, 0.0)
    for ts in t_segs:
        preds = [find_particles(p, class_names, diameters, t_seg=ts, t_lm=0.05, smooth=smooth,
                                label_diameters=label_diameters) for p in probs_list]
        # per-class score threshold chosen independently (classes hardly interact after NMS)
        thr = {}
        absent = [c for c in class_names
                  if not any((ref.classes == c).any() if ref.classes is not None else len(ref) for ref in tables)]
        for c in class_names:
            if c in absent:
                continue
            best_c, best_f = grid[0], -1.0
            for g in grid:
                tp = fp = fn = 0
                for pred, ref in zip(preds, tables):
                    pi = (pred.classes == c) & (pred.scores >= g) if len(pred) else np.zeros(0, bool)
                    ri = ref.classes == c if ref.classes is not None else np.ones(len(ref), bool)
                    # counts only: the matching step of evaluate(), same radius (0.5 x diameter)
                    n_tp = len(match(pred.xyz[pi], ref.xyz[ri], np.full(int(ri.sum()), 0.5 * diameters[c]))[0])
                    tp += n_tp
                    fp += int(pi.sum()) - n_tp
                    fn += int(ri.sum()) - n_tp
                f = 2 * tp / max(2 * tp + fp + fn, 1)
                # ties go to the higher threshold: calibrating on the training tomogram (no
                # validation tomogram) ties over a wide range, and on unseen tomograms
                # crowders score higher than on the fitted one (docs/picking.md, *Validation*)
                if f >= best_f:
                    best_c, best_f = g, f
            thr[c] = best_c
        # a class without validation particles: every threshold scores 0; take the others' median
        for c in absent:
            thr[c] = float(np.median(list(thr.values()))) if thr else 0.5
        f1s, cf1s = [], []
        for pred, ref in zip(preds, tables):
            r = evaluate(_above(pred, thr), ref, diameters)
            f1s.append(r["f1"])
            cf1s.append(r.get("mean_class_f1") or 0.0)
        f = float(np.mean(f1s))
        if f > best[1]:
            best = ({"t_seg": ts, "class": thr}, f, float(np.mean(cf1s)))
    return best


def calibrate_by_count(probs_list, tables, class_names, diameters, densities, t_segs=(0.1, 0.3, 0.5), smooth=0.25,
                       label_diameters=None):
    """Thresholds for sparsely annotated calibration tomograms, where an F1 would count every
    unannotated particle as a false pick: each class's threshold keeps as many picks as the
    class prior expects (``densities``: expected particles per voxel of each class, from the
    prior the PU loss uses), and the epoch is judged by the recall of the annotated particles
    among those picks (class and position right). Returns (thr, recall, localisation recall).

    Failure modes: a prior far from the truth moves every threshold with it (too low a prior:
    too few picks; too high: false picks); with very few annotated particles the recall moves
    in steps of 1/n between epochs."""
    best = (None, -1.0, 0.0)
    voxels = sum(int(np.prod(p.shape[1:])) for p in probs_list)
    for ts in t_segs:
        preds = [find_particles(p, class_names, diameters, t_seg=ts, t_lm=0.05, smooth=smooth,
                                label_diameters=label_diameters) for p in probs_list]
        thr = {}
        for c, density in zip(class_names, densities):
            scores = np.sort(np.concatenate([p.scores[p.classes == c] for p in preds if len(p)] + [np.zeros(0)]))
            n = int(round(density * voxels))
            # the n-th best candidate's score; fewer candidates than expected: keep them all
            thr[c] = float(np.clip(scores[-n] if 0 < n <= len(scores) else (scores[0] if len(scores) else 0.5),
                                   0.02, 0.98))
        found = found_loc = total = 0
        for pred, ref in zip(preds, tables):
            kept = _above(pred, thr)
            radii = np.array([0.5 * diameters[c] for c in ref.classes])
            total += len(ref)
            found_loc += len(match(kept.xyz, ref.xyz, radii)[0])
            found += int(match_by_class(kept, ref, radii)[1].sum())
        recall, loc = found / max(total, 1), found_loc / max(total, 1)
        if recall > best[1]:
            best = ({"t_seg": ts, "class": thr}, recall, loc)
    return best


def _above(pred, thr):
    """The picks of ``pred`` whose score reaches their class's threshold in ``thr``."""
    keep = np.array([s >= thr[c] for c, s in zip(pred.classes, pred.scores)], dtype=bool)
    return pred.subset(np.where(keep)[0])

"""Viewers: training curves; picks over tomogram slices with the score histogram;
classification (class averages, sizes, feature embedding, BIC/DDBI per iteration).

The ``plot_*`` functions fill an ``EmPlotter`` (a matplotlib figure), so the same pictures
show in the project GUI and render to PNG in scripts and tests (``plotter.savefig``).
"""
import numpy as np
from pwem.viewers import EmPlotter
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, Viewer

from .engine.modelinfo import kept_entry
from .protocols import ProtPicker3DClassify, ProtPicker3DEvaluate, ProtPicker3DPick, ProtPicker3DTrain

CLASS_COLOURS = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:olive",
                 "tab:pink", "tab:brown", "tab:gray"]


def plot_training(history, title="picker3d training"):
    """Loss and validation F1 (localisation and mean class) per epoch."""
    plotter = EmPlotter(x=1, y=2, mainTitle=title, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    ax = plotter.createSubPlot("Training loss", "epoch", "loss")
    ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue")
    ax = plotter.createSubPlot("Validation", "epoch", "F1")
    if any("val_f1" in h for h in history):
        ax.plot(epochs, [h.get("val_f1", np.nan) for h in history], "o-", label="localisation F1")
        ax.plot(epochs, [h.get("val_class_f1", np.nan) for h in history], "s--", label="mean class F1")
        kept = kept_entry(history)["epoch"]
        ax.axvline(kept, color="gray", ls=":", label=f"kept: epoch {kept}")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=ax.transAxes)
    return plotter


def plot_picks(volume, table, class_names, diameters, title="", n_slices=4, threshold=None):
    """Slab-averaged slices of a tomogram with the picks near each slab circled by class,
    and the score histogram (with the score threshold when given)."""
    from matplotlib.patches import Circle
    plotter = EmPlotter(x=1, y=n_slices + 1, mainTitle=title, figsize=(3.2 * (n_slices + 1), 3.6))
    nz = volume.shape[0]
    zs = np.linspace(0, nz, n_slices + 2)[1:-1].astype(int)
    dmax = max(diameters.values()) if diameters else 10
    half = max(1, int(dmax // 4))
    colour = {c: CLASS_COLOURS[i % len(CLASS_COLOURS)] for i, c in enumerate(class_names)}
    for z in zs:
        ax = plotter.createSubPlot(f"z = {z}", None, None)
        slab = volume[max(0, z - half):z + half + 1].mean(axis=0)
        lo, hi = np.percentile(slab, [1, 99])
        ax.imshow(slab, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        if len(table):
            near = np.abs(table.xyz[:, 2] - z) <= dmax / 2
            for (x, y, _), c in zip(table.xyz[near], np.asarray(table.classes)[near]):
                r = diameters.get(c, dmax) / 2
                ax.add_patch(Circle((x, y), r, fill=False, color=colour.get(c, "yellow"), lw=1.2))
        ax.set_xticks([])
        ax.set_yticks([])
    ax = plotter.createSubPlot("Scores", "score", "particles")
    if len(table) and table.scores is not None:
        for c in class_names:
            s = table.scores[np.asarray(table.classes) == c]
            if len(s):
                ax.hist(s, bins=20, range=(0, 1), alpha=0.6, color=colour[c], label=f"{c} ({len(s)})")
        ax.legend(fontsize=7)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--")
    return plotter


def plot_class_averages(averages, sizes, title="picker3d classes"):
    """Gallery: one row per class, central slices in the three orientations (xy, xz, yz)."""
    k = len(averages)
    plotter = EmPlotter(x=k, y=3, mainTitle=title, figsize=(6.0, 2.0 * k + 0.6))
    for i, (avg, n) in enumerate(zip(averages, sizes), start=1):
        c = [s // 2 for s in avg.shape]
        for name, img in (("xy", avg[c[0]]), ("xz", avg[:, c[1]]), ("yz", avg[:, :, c[2]])):
            ax = plotter.createSubPlot(f"class {i} ({n}) {name}", None, None)
            lo, hi = np.percentile(avg, [1, 99])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
    return plotter


def plot_fsc(info, voxel_size, title="picker3d class resolution"):
    """The FSC of each class's two half averages against resolution, with the 0.143 and 0.5
    criteria."""
    plotter = EmPlotter(x=1, y=1, mainTitle=title, figsize=(6, 4))
    ax = plotter.createSubPlot("Fourier shell correlation of half averages", "resolution (1/Å)", "FSC")
    for r in info.get("resolution", []):
        curve = np.asarray(r["fsc"])
        box = 2 * len(curve)
        freq = np.arange(len(curve)) / (box * voxel_size)
        ax.plot(freq[1:], curve[1:], color=CLASS_COLOURS[(r["class"] - 1) % len(CLASS_COLOURS)],
                label=f"class {r['class']} ({r['members']}): {r['fsc_0143_A']:.0f} Å")
    for level in (0.143, 0.5):
        ax.axhline(level, color="gray", ls=":", lw=1)
    ax.set_ylim(-0.2, 1.05)
    ax.legend(fontsize=7)
    return plotter


def plot_clustering(table, info, title="picker3d classification"):
    """Class sizes, the 2D feature embedding coloured by class, and BIC / DDBI per iteration."""
    plotter = EmPlotter(x=1, y=3, mainTitle=title, figsize=(13, 4))
    labels = np.asarray(table.extra["cluster"], dtype=int)
    k = int(info["k"])
    colours = [CLASS_COLOURS[i % len(CLASS_COLOURS)] for i in range(k)]
    ax = plotter.createSubPlot("Class sizes", "class", "particles")
    ax.bar(range(1, k + 1), np.bincount(labels, minlength=k + 1)[1:], color=colours)
    ax = plotter.createSubPlot("Feature embedding (PCA)", "component 1", "component 2")
    for i in range(1, k + 1):
        sel = labels == i
        ax.scatter(table.extra["embed_x"][sel], table.extra["embed_y"][sel], s=6, color=colours[i - 1],
                   label=f"class {i}")
    ax.legend(fontsize=7, markerscale=2)
    ax = plotter.createSubPlot("Iterations", "iteration", "DDBI")
    its = [h["iteration"] + 1 for h in info["history"]]
    ax.plot(its, [h["ddbi"] for h in info["history"]], "o-", color="tab:blue", label="DDBI")
    ax.axvline(info["iteration"], color="gray", ls=":", label=f"kept: {info['iteration']}")
    ax.legend(fontsize=7, loc="upper left")
    ax2 = ax.twinx()
    ax2.plot(its, [h["bic"] for h in info["history"]], "s--", color="tab:orange", label="BIC")
    ax2.set_ylabel("BIC of the chosen mixture")
    for it, h in zip(its, info["history"]):
        ax.annotate(f"K={h['k']}", (it, h["ddbi"]), fontsize=7, textcoords="offset points", xytext=(0, 5))
    return plotter


def plot_evaluation(result, threshold=None, title="picker3d evaluation"):
    """Precision-recall curve, and F1 against the score threshold with the chosen one marked
    (the given threshold, else the one with the best F1)."""
    plotter = EmPlotter(x=1, y=2, mainTitle=title, figsize=(10, 4))
    curve = result.get("pr_curve") or []
    thr = np.array([c["threshold"] for c in curve])
    prec = np.array([c["precision"] for c in curve])
    rec = np.array([c["recall"] for c in curve])
    ax = plotter.createSubPlot(f"Precision-recall (AP {result['ap']:.3f})", "recall", "precision")
    ax.plot(rec, prec, "-", color="tab:blue")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax = plotter.createSubPlot("F1 against the score threshold", "score threshold", "F1")
    if len(thr):
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
        ax.plot(thr, f1, "-", color="tab:green")
        chosen = threshold if threshold is not None and threshold >= 0 else float(thr[int(np.argmax(f1))])
        best = f1[int(np.argmin(np.abs(thr - chosen)))]
        ax.axvline(chosen, color="k", ls="--", label=f"threshold {chosen:.3f}: F1 {best:.3f}")
        ax.legend(fontsize=8)
        ax.set_ylim(0, 1.02)
    return plotter


class Picker3DTrainViewer(Viewer):
    """Loss and validation F1 per epoch of a picker3d training."""
    _label = "training curves"
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]
    _targets = [ProtPicker3DTrain]

    def _visualize(self, obj, **kwargs):
        history = self.protocol.getHistory()
        if not history:
            self.errorMessage("No epoch finished yet.", title="picker3d")
            return []
        return [plot_training(history, title=f"picker3d training ({self.protocol.getRunName()})")]


class Picker3DPickViewer(Viewer):
    """Tomogram slices with the picks of each class, and the score histogram."""
    _label = "picks over slices"
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]
    _targets = [ProtPicker3DPick]

    def _visualize(self, obj, **kwargs):
        from .convert import tomograms_by_ts_id
        from .engine.formats.mrc import read_volume
        prot = self.protocol
        model = prot.inputModel.get()
        views = []
        for ts_id, tomo in sorted(tomograms_by_ts_id(prot.inputTomograms.get()).items()):
            vol, _ = read_volume(tomo.getFileName().split(":")[0])
            thr = prot.threshold.get() if prot.threshold.get() is not None and prot.threshold.get() >= 0 else None
            views.append(plot_picks(vol, prot.getTable(ts_id), model.getClassNames(), model.getDiameters(),
                                    title=f"picker3d picks: {ts_id}", threshold=thr))
        return views


class Picker3DClassifyViewer(Viewer):
    """Class averages (central slices), class sizes, feature embedding, BIC/DDBI history, and
    the FSC curves of the aligned classes."""
    _label = "classes"
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]
    _targets = [ProtPicker3DClassify]

    def _visualize(self, obj, **kwargs):
        from .engine.formats.mrc import read_volume
        from .engine.formats.readers import read_table
        prot = self.protocol
        _, info = prot.getResult()
        if info is None:
            self.errorMessage("The classification has not finished yet.", title="picker3d")
            return []
        averages = [read_volume(prot._absPath(prot.getAverageFile(i)))[0] for i in range(1, info["k"] + 1)]
        name = prot.getRunName()
        kind = "aligned" if info.get("aligned") else "unaligned"
        views = [plot_class_averages(averages, info["sizes"], title=f"picker3d {kind} class averages ({name})"),
                 plot_clustering(read_table(prot._absPath(prot._labelsFile())), info,
                                 title=f"picker3d classification ({name})")]
        if info.get("resolution"):
            sampling = prot.inputCoordinates.get().getPrecedents().getSamplingRate() or 1.0
            views.append(plot_fsc(info, sampling, title=f"picker3d class resolution ({name})"))
        return views


class Picker3DEvaluateViewer(Viewer):
    """Precision-recall curve and F1 against the threshold, overall."""
    _label = "precision-recall"
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]
    _targets = [ProtPicker3DEvaluate]

    def _visualize(self, obj, **kwargs):
        res = self.protocol.getResults()
        if res is None:
            self.errorMessage("The evaluation has not finished yet.", title="picker3d")
            return []
        return [plot_evaluation(res["overall"], res.get("threshold"),
                                title=f"picker3d evaluation ({self.protocol.getRunName()})")]

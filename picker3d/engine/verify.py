"""Second-stage verification of picks at twice the network's resolution.

A U-Net that works on 2x-binned tomograms (the CPU default) sees a particle of 8 voxels as 4:
on the benchmark set its `tiny` species was practically never picked right (F1 0.01), while
its candidates there included the real ones among many false ones. The verifier is a small
3-D CNN that looks at a box around each candidate at half the network's binning (full
resolution for bin 2) and says which class, or none, is there; a candidate is kept when the
verifier's probability of "no particle" is below a threshold calibrated on the validation
data, and keeps the U-Net's class. It is trained after the U-Net, within the same budget, on
the annotated particles (class-balanced, jittered by 2 voxels, mirrored, intensity-jittered)
against the U-Net's own false picks on its training tomograms, dense unannotated places and
random places.

No Scipion imports: usable from a plain script.
"""
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .coords import CoordTable
from .network import autocast

# U-Net candidates are taken down to this score; the verifier decides
CANDIDATE_THRESHOLD = 0.3
# steps of a verifier trained by epochs (no time budget): ~150 s on 2 CPU cores for 32^3 boxes
DEFAULT_STEPS = 800
BATCH = 32


def _block(cin, cout, stride=1):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(cout),
                         nn.ReLU(inplace=True))


class Verifier(nn.Module):
    """Box classifier: (B, 1, box, box, box) -> logits over none + the classes.

    Three stride-2 stages of [8], 16, 32, 64 channels, global average pooling, dropout, linear."""

    def __init__(self, n_classes, box, widths=(8, 16, 32, 64), dropout=0.3):
        super().__init__()
        self.config = {"n_classes": n_classes, "box": box, "widths": list(widths), "dropout": dropout}
        layers, cin = [], 1
        for i, w in enumerate(widths):
            if i:
                layers.append(_block(cin, w, stride=2))
            layers.append(_block(w if i else cin, w))
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, n_classes + 1))

    def forward(self, x):
        return self.head(self.features(x))


def geometry(diameters, bin):
    """``(verifier bin, box side)`` for a network working at ``bin``: half the binning, a box
    (multiple of 8, at least 16) holding the largest particle plus 3 voxels on each side."""
    vbin = max(1, int(bin) // 2)
    largest = max(float(d) for d in diameters.values()) / vbin
    return vbin, max(16, int(math.ceil((largest + 6) / 8.0)) * 8)


def extract_boxes(volume, zyx, box):
    """``(n, box, box, box)`` float32 boxes centred on the rounded ``zyx`` (reflected at the borders)."""
    h = box // 2
    padded = np.pad(volume, h, mode="reflect")
    out = np.empty((len(zyx), box, box, box), dtype=np.float32)
    for i, (z, y, x) in enumerate(np.round(np.asarray(zyx)).astype(int)):
        z, y, x = (int(np.clip(c, 0, n - 1)) for c, n in zip((z, y, x), volume.shape))
        out[i] = padded[z:z + box, y:y + box, x:x + box]
    return out


def train_verifier(volumes, tables, negatives, class_names, box, steps=None, seconds=None, seed=0,
                   device="cpu", amp=None, lr=2e-3, log=print):
    """Train a :class:`Verifier` on normalised ``volumes`` at the verifier's binning.

    ``tables``: the annotations (CoordTable, same voxels); ``negatives``: per volume a list of
    ``(name, zyx array)`` groups of places that hold no target (the U-Net's false picks, dense
    unannotated places), sampled equally. Half of each batch are particles, class-balanced.
    Stops after ``steps`` or ``seconds`` (one-cycle schedule over either)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = Verifier(len(class_names), box).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    h = box // 2 + 2
    padded = [np.pad(v, h, mode="reflect") for v in volumes]
    particles = {c: [(i, xyz[::-1]) for i, t in enumerate(tables) for xyz, n in zip(t.xyz, t.classes) if n == c]
                 for c in class_names}
    present = [c for c in class_names if particles[c]]
    groups = [(i, zyx) for i, g in enumerate(negatives) for _, zyx in g if len(zyx)]

    def one():
        if rng.random() < 0.5 and present:
            c = present[rng.integers(len(present))]
            i, centre = particles[c][rng.integers(len(particles[c]))]
            label = class_names.index(c) + 1
        elif groups and rng.random() < 0.8:
            i, zyx = groups[rng.integers(len(groups))]
            centre, label = zyx[rng.integers(len(zyx))], 0
        else:
            i = int(rng.integers(len(volumes)))
            centre, label = rng.uniform(0, volumes[i].shape), 0
        z, y, x = (int(np.clip(round(float(c)) + int(rng.integers(-2, 3)), 0, n - 1)) + h - box // 2
                   for c, n in zip(centre, volumes[i].shape))
        b = padded[i][z:z + box, y:y + box, x:x + box]
        for ax in range(3):
            if rng.random() < 0.5:
                b = np.flip(b, ax)
        b = b * rng.uniform(0.8, 1.25) + rng.normal(0.0, rng.uniform(0.0, 0.3), b.shape)
        return np.ascontiguousarray(b, dtype=np.float32), label

    t0, step = time.time(), 0
    net.train()
    while True:
        frac = step / steps if steps else (time.time() - t0) / max(seconds, 1e-9)
        if frac >= 1.0:
            break
        batch = [one() for _ in range(BATCH)]
        x = torch.from_numpy(np.stack([b for b, _ in batch])[:, None]).to(device)
        y = torch.tensor([lab for _, lab in batch], device=device)
        # one-cycle: warm up over the first 20 %, cosine down to lr / 1e4
        f = min(frac, 1.0)
        cur = lr * (f / 0.2 if f < 0.2 else 0.5 * (1 + math.cos(math.pi * (f - 0.2) / 0.8)) + 1e-4)
        for g in opt.param_groups:
            g["lr"] = cur
        with autocast(device, amp):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            log(f"verifier step {step}  loss {float(loss.detach()):.3f}  elapsed {time.time() - t0:.0f}s")
    log(f"verifier trained: {step} steps of {BATCH} boxes of {box}³ in {time.time() - t0:.0f}s")
    return net.eval()


def verifier_probs(net, volume, zyx, device="cpu", amp=None, chunk=64):
    """``(n, 1 + classes)`` probabilities of the boxes at ``zyx`` in the normalised ``volume``,
    averaged over 4 mirrored copies (y, x: the missing wedge stays where it is)."""
    box = net.config["box"]
    out = np.zeros((len(zyx), net.config["n_classes"] + 1), dtype=np.float32)
    net.eval()
    with torch.inference_mode():
        for s in range(0, len(zyx), chunk):
            x = torch.from_numpy(extract_boxes(volume, zyx[s:s + chunk], box)[:, None]).to(device)
            p = 0
            for dims in ((), (3,), (4,), (3, 4)):
                with autocast(device, amp):
                    logits = net(torch.flip(x, dims) if dims else x)
                p = p + torch.softmax(logits.float(), dim=1)
            out[s:s + chunk] = (p / 4).cpu().numpy()
    return out


def gate(table, probs, threshold):
    """The picks of ``table`` whose probability of "no particle" is below ``threshold``, scored
    by one minus it (the U-Net's class kept)."""
    keep = np.where(probs[:, 0] < threshold)[0]
    kept = table.subset(keep)
    return CoordTable(kept.xyz, kept.classes, 1.0 - probs[keep, 0])


def load_verifier(spec, device="cpu"):
    """A :class:`Verifier` from the ``verifier`` entry of a model file."""
    cfg = spec["config"]
    net = Verifier(cfg["n_classes"], cfg["box"], cfg["widths"], cfg["dropout"])
    net.load_state_dict(spec["state_dict"])
    return net.to(device).eval()

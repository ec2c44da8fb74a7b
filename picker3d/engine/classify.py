"""Clustering-based classification of picked sub-volumes: DISCA (seed 003).

The loop is a generalised EM (seed 003, "Methods" and Fig. 2):

1. a YOPO feature network (§ "YOPO": 3D convolutions *without pooling*, a global
   max-pool after every convolution, the pooled vectors concatenated, a fully connected
   feature layer; Gaussian dropout on the input while training; orthogonal kernels and
   zero biases) turns every sub-volume into a feature vector;
2. the features (PCA-whitened) are modelled by a full-covariance Gaussian mixture; K is
   chosen by BIC over a candidate range (default 2-20, the paper's Table 1 setting);
   a fit warm-started from the previous iteration's labels competes with a fresh fit
   and the better one is kept (the "epsilon-greedy" step);
3. cluster labels are aligned to the previous iteration's (Hungarian matching) so a
   class keeps its number;
4. YOPO is trained on the labels (smoothed by a factor that decays over iterations) on
   the sub-volumes and on randomly rotated copies whose empty corners are filled with
   N(0, 1) noise (§ "rotation invariance"); when K changes the classification head is
   replaced and first trained alone on the fixed features;
5. stop when the labels no longer change (or after the last iteration); the result is
   the iteration with the lowest DDBI among those with the most frequent K (DDBI alone
   favours merging two close classes: on 2,000 boxes at SNR 0.03 a last-iteration merge
   to K=4 had the lowest DDBI after seven iterations at the true K=5).

Choices the paper leaves open, made here and stated so users can judge them:
- features are 64-long, not 1024: the GMM sees at most ``pca_dim`` PCA components
  anyway, and a smaller layer keeps a 2-core CPU fast;
- the warm and the fresh mixture are compared by BIC (equal to comparing likelihoods
  when they have the same K, and fair when they do not);
- DDBI (defined in the paper's SI, which is not in the seed) is implemented as the
  Davies-Bouldin index with Mahalanobis distances: a cluster's scatter is the mean
  distance of its members to its mean under its own covariance, the separation of two
  clusters the distance of their means under the average of the two covariances;
- class averages are plain averages of the members, *not aligned*: an overview of what
  each class holds, not a reconstruction. Align and average in Relion/Dynamo.

No Scipion imports: usable from a plain script.
"""
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError
from .volume import volume_stats


# ----------------------------------------------------------------------------------------
# sub-volume extraction
# ----------------------------------------------------------------------------------------

def normalize_box(stack):
    """Zero mean, unit std per box (in place on a float32 copy)."""
    stack = np.asarray(stack, dtype=np.float32).copy()
    axes = tuple(range(1, stack.ndim))
    stack -= stack.mean(axis=axes, keepdims=True)
    stack /= stack.std(axis=axes, keepdims=True) + 1e-6
    return stack


def bin_boxes(stack, binning):
    """Block-average a (n, b, b, b) stack by ``binning`` (the box is cropped to a multiple)."""
    if binning <= 1:
        return stack
    n, b = stack.shape[0], stack.shape[1] // binning * binning
    s = stack[:, :b, :b, :b].reshape(n, b // binning, binning, b // binning, binning, b // binning, binning)
    return s.mean(axis=(2, 4, 6))


def extract_subvolumes(volume, xyz, box, out_of_volume="pad", per_box=True):
    """Boxes of side ``box`` centred on ``xyz`` (n, 3; voxels, x = last axis) of ``volume``.

    The tomogram is normalised once (zero mean, unit std) and, with ``per_box``, each box
    again (``per_box=False`` keeps the tomogram's scale, for :func:`box_contrast`). A box
    reaching outside the volume is padded with the tomogram mean (``"pad"``) or left out
    (``"skip"``). Returns ``(stack (m, box, box, box) float32, kept indices, n_outside)``.
    """
    if out_of_volume not in ("pad", "skip"):
        raise InputError(f"--out-of-volume: '{out_of_volume}' must be pad or skip")
    if box < 4:
        raise InputError(f"--box: {box} is too small (at least 4 voxels)")
    vol = np.asarray(volume, dtype=np.float32)
    mean, std = volume_stats(vol)
    std = std or 1.0
    shape = np.array(vol.shape)
    half = box // 2
    out, kept, outside = [], [], 0
    for i, (x, y, z) in enumerate(np.asarray(xyz, dtype=float).reshape(-1, 3)):
        c = np.rint([z, y, x]).astype(int)
        lo, hi = c - half, c - half + box
        if np.all(lo >= 0) and np.all(hi <= shape):
            sub = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        else:
            outside += 1
            if out_of_volume == "skip":
                continue
            sub = np.full((box, box, box), mean, dtype=np.float32)
            a, b = np.maximum(lo, 0), np.minimum(hi, shape)
            if np.all(b > a):
                sub[a[0] - lo[0]:b[0] - lo[0], a[1] - lo[1]:b[1] - lo[1], a[2] - lo[2]:b[2] - lo[2]] = \
                    vol[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        out.append((sub - mean) / std)
        kept.append(i)
    stack = np.stack(out) if out else np.zeros((0, box, box, box), np.float32)
    return (normalize_box(stack) if per_box else stack), np.asarray(kept, dtype=int), outside


def box_contrast(stack):
    """(n, 2): log standard deviation of each box, and the mean density within box/6 of its
    centre minus the mean beyond box/3 (the rim), both relative to the whole stack.

    Per-box normalisation (which the shape features need) removes how much density a box
    holds; these two rotation-invariant numbers keep it: gold and membranes are strong, and
    a particle puts density at the centre of its pick where an empty-ice pick puts none
    (on a simulated tomogram at SNR 0.05 the centre's low-pass density told empty boxes
    from particles with AUC 0.93, the box's standard deviation with 0.46). Measured with
    ``disca_on_boxes(contrast_weight=...)`` (benchmarks/bench_classify.py): at weight 3 the
    share of empty picks in empty-majority classes rose from 0.30 to 0.50 (mean of three
    seeds) with the shape sorting of 2,000 sub-tomograms unchanged (SNR 0.03: K = 5,
    homogeneity 0.949); at weight 4 it reached 0.94-1.00 but SNR 0.03 fell to K = 4,
    homogeneity 0.81. (The first version's box mean in place of the centre-rim difference
    isolated no junk.)"""
    stack = np.asarray(stack, dtype=np.float32)
    stack = (stack - stack.mean()) / (stack.std() + 1e-6)
    flat = stack.reshape(len(stack), -1)
    n = stack.shape[1]
    r = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij")))
    centre = r <= max(n / 6.0, 1.0)      # never empty, even for a tiny even-sized box
    shell = r > n / 3.0
    # density at the centre against the box's rim: what a particle puts where it was picked
    centre_mass = stack[:, centre].mean(axis=1) - stack[:, shell].mean(axis=1)
    return np.stack([np.log(flat.std(axis=1) + 1e-6), centre_mass], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------
# YOPO feature network
# ----------------------------------------------------------------------------------------

class GaussianDropout(nn.Module):
    """Multiplicative 1-centred Gaussian noise, std sqrt(p / (1 - p)) (p = 0.5 -> std 1, seed 003)."""

    def __init__(self, p=0.5):
        super().__init__()
        self.std = math.sqrt(p / (1.0 - p)) if p > 0 else 0.0

    def forward(self, x):
        if self.training and self.std > 0:
            return x * (1.0 + self.std * torch.randn_like(x))
        return x


class YOPO(nn.Module):
    """You Only Pool Once: valid 3x3x3 convolutions, global max-pool after each, concatenated.

    Valid (unpadded) convolutions and global max-pooling make the features of an object
    and of its translated copy identical as long as the object stays inside the box.
    """

    def __init__(self, n_classes=2, channels=(8, 16, 16, 32, 32), n_features=64, dropout=0.5):
        super().__init__()
        self.config = {"channels": list(channels), "n_features": n_features, "dropout": dropout}
        self.drop = GaussianDropout(dropout)
        layers, cin = [], 1
        for c in channels:
            layers.append(nn.Sequential(nn.Conv3d(cin, c, 3), nn.BatchNorm3d(c), nn.ELU()))
            cin = c
        self.convs = nn.ModuleList(layers)
        self.fc = nn.Sequential(nn.Linear(sum(channels), n_features), nn.ELU())
        self.head = nn.Linear(n_features, n_classes)
        for m in self.modules():   # orthogonal kernels, zero biases (seed 003, Discussion)
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                nn.init.orthogonal_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def min_box(self):
        return 2 * len(self.convs) + 1

    def features(self, x):
        x = self.drop(x)
        pooled = []
        for conv in self.convs:
            x = conv(x)
            pooled.append(torch.amax(x, dim=(2, 3, 4)))
        return self.fc(torch.cat(pooled, dim=1))

    def forward(self, x):
        return self.head(self.features(x))

    def new_head(self, n_classes):
        self.head = nn.Linear(self.head.in_features, n_classes).to(self.head.weight.device)
        nn.init.orthogonal_(self.head.weight)
        nn.init.zeros_(self.head.bias)


@torch.inference_mode()
def extract_features(model, stack, device="cpu", batch=256):
    """(n, n_features) features of a (n, b, b, b) stack, network in eval mode."""
    model.eval()
    out = []
    for i in range(0, len(stack), batch):
        x = torch.from_numpy(np.ascontiguousarray(stack[i:i + batch]))[:, None].to(device)
        out.append(model.features(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.fc[0].out_features), np.float32)


def random_rotations(n, rng):
    """(n, 3, 3) rotation matrices uniform on SO(3) (unit quaternions from Gaussians)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], 1)


def rotate_boxes(x, rng):
    """Randomly rotated copies of a (n, 1, b, b, b) batch; corners filled with N(0, 1) noise."""
    n = x.shape[0]
    rot = torch.from_numpy(random_rotations(n, rng)).to(x.dtype).to(x.device)
    theta = torch.cat([rot, torch.zeros(n, 3, 1, dtype=x.dtype, device=x.device)], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x), grid, mode="nearest", padding_mode="zeros",
                           align_corners=False)
    return out + (1.0 - inside) * torch.randn_like(x)


def invariant_descriptors(stack):
    """Rotation-invariant descriptors of a (n, b, b, b) stack: the radial profiles of the
    mean and of the standard deviation around the box centre, and the radially averaged
    log power spectrum (translation invariant as well).

    They seed the first E-step: features of a randomly initialised network are mostly
    noise (on two very different shapes at high SNR they gave homogeneity 0.06), these
    separate the simulator's five species at SNR 0.03 with homogeneity 0.90 on their own.
    """
    stack = np.asarray(stack, dtype=np.float32)
    n, b = stack.shape[0], stack.shape[1]
    grid = np.indices((b, b, b)).reshape(3, -1).T

    def shells(centre):
        r = np.rint(np.linalg.norm(grid - centre, axis=1)).astype(int)
        r = np.minimum(r, b // 2)
        onehot = np.zeros((b ** 3, b // 2 + 1), np.float32)
        onehot[np.arange(b ** 3), r] = 1.0
        count = onehot.sum(axis=0)
        keep = count > 0
        return onehot[:, keep] / count[keep]

    flat = stack.reshape(n, -1)
    real = shells(np.full(3, (b - 1) / 2))
    mean = flat @ real
    std = np.sqrt(np.maximum((flat ** 2) @ real - mean ** 2, 0.0))
    power = np.abs(np.fft.fftshift(np.fft.fftn(stack, axes=(1, 2, 3)), axes=(1, 2, 3))) ** 2
    spectrum = np.log(power.reshape(n, -1) @ shells(np.full(3, b // 2)) + 1e-6)
    return np.concatenate([mean, std, spectrum[:, 1:]], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------
# clustering
# ----------------------------------------------------------------------------------------

def _gmm(k, seed, reg, **init):
    from sklearn.mixture import GaussianMixture
    return GaussianMixture(k, covariance_type="full", reg_covar=reg, max_iter=300,
                           random_state=seed, **init)


def fit_gmm_bic(Z, k_range, seed=0, reg=1e-3):
    """Full-covariance mixtures for every K in ``k_range``; returns (best, {K: BIC})."""
    best, bics = None, {}
    for k in k_range:
        if k > len(Z) - 1:
            break
        g = _gmm(k, seed, reg).fit(Z)
        bics[k] = float(g.bic(Z))
        if best is None or bics[k] < best.bic_:
            best = g
            best.bic_ = bics[k]
    if best is None:
        raise InputError(f"{len(Z)} particles are too few to cluster (need more than {min(k_range)})")
    return best, bics


def _cluster_moments(Z, labels, reg):
    """Members, means and regularised covariances of the clusters with at least two members."""
    d = Z.shape[1]
    members = [Z[labels == k] for k in np.unique(labels) if (labels == k).sum() > 1]
    means = [m.mean(axis=0) for m in members]
    covs = [np.cov(m, rowvar=False).reshape(d, d) + reg * np.eye(d) for m in members]
    return members, means, covs


def fit_gmm_from_labels(Z, labels, seed=0, reg=1e-3):
    """Mixture warm-started from hard labels (weights, means, covariances of each group)."""
    members, means, covs = _cluster_moments(Z, labels, reg)
    if not members:
        return None
    weights = np.asarray([len(m) for m in members], float) / sum(len(m) for m in members)
    g = _gmm(len(members), seed, reg, weights_init=weights, means_init=np.asarray(means),
             precisions_init=np.asarray([np.linalg.inv(c) for c in covs])).fit(Z)
    g.bic_ = float(g.bic(Z))
    return g


def align_labels(new, previous):
    """Rename ``new`` cluster ids to match ``previous`` ones (Hungarian on the overlap); the
    result is renumbered 0..K-1 with matched clusters keeping their previous order."""
    from scipy.optimize import linear_sum_assignment
    new = np.asarray(new)
    nk = np.unique(new)
    if previous is None:
        return np.searchsorted(nk, new)
    pk = np.unique(previous)
    overlap = np.array([[np.sum((new == a) & (previous == b)) for b in pk] for a in nk])
    rows, cols = linear_sum_assignment(-overlap)
    target = {int(nk[r]): float(pk[c]) for r, c in zip(rows, cols)}
    extra = [a for a in nk if int(a) not in target]
    for j, a in enumerate(extra):     # new clusters go after the matched ones
        target[int(a)] = float(pk.max()) + 1 + j
    order = sorted(set(target.values()))
    rank = {v: i for i, v in enumerate(order)}
    return np.array([rank[target[int(a)]] for a in new], dtype=int)


def ddbi(Z, labels, reg=1e-3):
    """Distortion-based Davies-Bouldin index (lower = tighter, better separated clusters)."""
    members, means, covs = _cluster_moments(Z, labels, reg)
    if len(members) < 2:
        return float("inf")
    scatter = []
    for m, mu, cov in zip(members, means, covs):
        diff = m - mu
        scatter.append(float(np.mean(np.sqrt(np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)))))
    worst = []
    for i in range(len(members)):
        r = []
        for j in range(len(members)):
            if i == j:
                continue
            diff = means[i] - means[j]
            sep = math.sqrt(float(diff @ np.linalg.inv((covs[i] + covs[j]) / 2) @ diff))
            r.append((scatter[i] + scatter[j]) / max(sep, 1e-12))
        worst.append(max(r))
    return float(np.mean(worst))


def _project(features, dim, seed, weights=None):
    """Standardise every column (then multiply by ``weights``, if given), then PCA-whiten to
    at most ``dim`` components (whitening keeps the mixture's covariance regularisation on
    one scale)."""
    from sklearn.decomposition import PCA
    f = features - features.mean(axis=0)
    f /= f.std(axis=0) + 1e-6
    if weights is not None:
        f *= weights
    dim = max(1, min(dim, f.shape[1], len(f) - 1))
    return PCA(dim, whiten=True, random_state=seed).fit_transform(f)


# ----------------------------------------------------------------------------------------
# DISCA
# ----------------------------------------------------------------------------------------

def _train_step(model, opt, x, target):
    opt.zero_grad(set_to_none=True)
    logp = F.log_softmax(model(x), dim=1)
    loss = -(target * logp).sum(dim=1).mean()
    loss.backward()
    opt.step()
    return float(loss.detach())


def _train_head(model, feats, labels, k, steps=100, lr=1e-2):
    """Fit a freshly initialised head on fixed features so it agrees with the labels first."""
    x = torch.from_numpy(feats).to(model.head.weight.device)
    y = torch.from_numpy(labels).long().to(x.device)
    opt = torch.optim.Adam(model.head.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model.head(x), y).backward()
        opt.step()


def disca(stack, k_range=range(2, 21), iterations=10, epochs=1, batch=32, lr=1e-3, smoothing=0.2,
          pca_dim=2, tol=0.01, seed=0, device="cpu", channels=(8, 16, 16, 32, 32), n_features=64,
          init="descriptors", combine=True, log=print, on_iteration=None, contrast=None, contrast_weight=1.0):
    """Cluster a (n, b, b, b) normalised stack. Returns a dict with ``labels``, ``posterior``,
    ``k``, ``iteration`` (the lowest-DDBI one of the most frequent K), ``history`` (per-iteration K, BIC, DDBI,
    label change, seconds), ``embedding`` (n, 2) and ``features``.

    ``init="descriptors"`` runs the first E-step on :func:`invariant_descriptors`,
    ``"network"`` on the untrained network's features (the paper's start).
    ``on_iteration(it, labels)`` is called after every E-step (benchmarks score it).
    ``contrast`` (n, c), e.g. :func:`box_contrast`, is appended to the features of every
    E-step, each column weighted ``contrast_weight`` times a standardised feature column
    (a few numbers among ~100 feature columns would otherwise hardly reach the PCA).
    """
    if init not in ("descriptors", "network"):
        raise InputError(f"--init: '{init}' must be descriptors or network")
    if contrast is not None:
        contrast = np.asarray(contrast, dtype=np.float32).reshape(len(stack), -1)
    descriptors = invariant_descriptors(stack) if init == "descriptors" else None
    stack = np.ascontiguousarray(stack, dtype=np.float32)
    k_range = list(k_range)
    if len(stack) <= max(2, min(k_range)):
        raise InputError(f"{len(stack)} particles are too few to cluster into at least {min(k_range)} classes")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = YOPO(2, channels, n_features).to(device)
    if stack.shape[1] < model.min_box:
        raise InputError(f"--box: sub-volumes of {stack.shape[1]} voxels are smaller than the network's "
                         f"{model.min_box}-voxel receptive field (use a larger box or less binning)")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    prev, history, best_by_k = None, [], {}
    t_start = time.time()
    for it in range(iterations):
        t0 = time.time()
        if it == 0 and init == "descriptors":
            feats = descriptors
        elif init == "descriptors" and combine:
            # network features next to the descriptors (every column is standardised before PCA)
            feats = np.concatenate([descriptors, extract_features(model, stack, device)], 1)
        else:
            feats = extract_features(model, stack, device)
        weights = None
        if contrast is not None:
            weights = np.r_[np.ones(feats.shape[1]), np.full(contrast.shape[1], float(contrast_weight))]
            feats = np.concatenate([feats, contrast], 1)
        Z = _project(feats, pca_dim, seed, weights)
        fresh, bics = fit_gmm_bic(Z, k_range, seed=seed + it)
        chosen, source = fresh, "fresh"
        if prev is not None:
            warm = fit_gmm_from_labels(Z, prev, seed=seed + it)
            if warm is not None and warm.bic_ <= fresh.bic_:   # keep the fresh fit only if better
                chosen, source = warm, "warm"
        labels = align_labels(chosen.predict(Z), prev)
        post = chosen.predict_proba(Z).max(axis=1)
        k = int(labels.max()) + 1
        change = 1.0 if prev is None else float(np.mean(labels != prev))
        score = ddbi(Z, labels)
        history.append({"iteration": it, "k": k, "bic": chosen.bic_, "bic_by_k": bics, "fit": source,
                        "ddbi": score, "label_change": change})
        if k not in best_by_k or score < best_by_k[k]["ddbi"]:
            best_by_k[k] = {"ddbi": score, "labels": labels, "posterior": post, "iteration": it, "k": k,
                            "features": feats, "Z": Z}
        if on_iteration is not None:
            on_iteration(it, labels)
        stop = prev is not None and change < tol
        if not stop and it < iterations - 1:
            # M-step: train YOPO on the current labels (smoothed; the factor decays to 0)
            alpha = smoothing * (1.0 - it / max(iterations - 1, 1))
            if k != model.head.out_features or (it == 0 and init == "descriptors"):
                model.new_head(k)
                _train_head(model, extract_features(model, stack, device), labels, k)
                opt = torch.optim.Adam(model.parameters(), lr=lr)
            model.train()
            losses = []
            for _ in range(epochs):
                for idx in np.array_split(rng.permutation(len(stack)), max(1, len(stack) // batch)):
                    x = torch.from_numpy(stack[idx])[:, None].to(device)
                    x = torch.cat([x, rotate_boxes(x, rng)])
                    y = torch.from_numpy(np.concatenate([labels[idx]] * 2)).long().to(device)
                    target = F.one_hot(y, k).float() * (1 - alpha) + alpha / k
                    losses.append(_train_step(model, opt, x, target))
            history[-1]["loss"] = float(np.mean(losses))
        history[-1]["seconds"] = time.time() - t0
        # the last iteration (or a stable one) has no M-step, hence no loss
        loss_txt = f"{history[-1]['loss']:.3f}" if "loss" in history[-1] else "- (no training)"
        log(f"iteration {it + 1}/{iterations}: K={k} ({source} fit) DDBI={score:.3f} "
            f"label change={change:.3f} loss={loss_txt} {history[-1]['seconds']:.1f}s")
        prev = labels
        if stop:
            log(f"labels stable (change {change:.4f} < {tol}): stopping")
            break
    # DDBI favours merging two close classes, so it only compares iterations that agree on
    # K: the result is the lowest-DDBI iteration among those with the most frequent K
    # (ties: the later K, as the features improve over iterations)
    ks = [h["k"] for h in history]
    k_mode = max(set(ks), key=lambda k: (ks.count(k), max(i for i, x in enumerate(ks) if x == k)))
    best = best_by_k[k_mode]
    from sklearn.decomposition import PCA
    Zb = best["Z"]
    emb = PCA(2, random_state=seed).fit_transform(Zb) if Zb.shape[1] >= 2 else np.c_[Zb, np.zeros(len(Zb))]
    log(f"result: iteration {best['iteration'] + 1} (lowest DDBI {best['ddbi']:.3f}), K={best['k']}, "
        f"{time.time() - t_start:.1f}s")
    return {"labels": best["labels"], "posterior": best["posterior"], "k": best["k"],
            "iteration": best["iteration"], "ddbi": best["ddbi"], "history": history,
            "embedding": emb, "features": best["features"]}


def split_by_density(labels, density, posterior=None, min_separation=3.0, min_size=5, seed=0, log=print):
    """Split a class in two where its boxes' centre density is clearly bimodal.

    A shape class can hold particles *and* empty-ice picks: at low SNR an empty box and a
    particle box look alike once each is normalised, but the particle puts density at the
    centre of its pick (:func:`box_contrast`'s second column). For every class of at least
    ``2 * min_size`` boxes, one- and two-component Gaussian mixtures are fitted to that
    density (standardised over all boxes); the class is split when BIC prefers two, both
    hold ``min_size`` boxes or more, and the components are separated by Ashman's D ≥
    ``min_separation`` (D = |mu1 - mu2| / sqrt((s1² + s2²) / 2); D > 2 is the usual mark of
    a clean separation, Ashman et al. 1994). The default 3 was measured on the simulator
    (benchmarks/bench_classify.py): splits of empty-ice picks from particles had D 3.4-4.4,
    while the orientation-dependent centre density of a rod at SNR 0.1 (one species) had
    D 2.4. The larger component keeps the class number; the other becomes a new class.
    ``min_separation`` 0 disables the split. Returns (labels, posterior, splits) — splits
    lists (class, new class, sizes, D)."""
    from sklearn.mixture import GaussianMixture
    labels = np.asarray(labels).copy()
    posterior = None if posterior is None else np.asarray(posterior, dtype=np.float64).copy()
    splits = []
    if min_separation <= 0 or len(labels) == 0:
        return labels, posterior, splits
    d = np.asarray(density, dtype=np.float64).reshape(-1)
    z = ((d - d.mean()) / (d.std() + 1e-12))[:, None]
    next_label = int(labels.max()) + 1
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2 * min_size:
            continue
        zc = z[members]
        fits = [GaussianMixture(k, covariance_type="full", reg_covar=1e-3, n_init=3, random_state=seed).fit(zc)
                for k in (1, 2)]
        two = fits[1]
        if two.bic(zc) >= fits[0].bic(zc):
            continue
        part = two.predict(zc)
        sizes = np.bincount(part, minlength=2)
        mu, var = two.means_.ravel(), two.covariances_.ravel()
        sep = abs(mu[0] - mu[1]) / np.sqrt((var[0] + var[1]) / 2)
        if sizes.min() < min_size or sep < min_separation:
            continue
        moved = members[part == np.argmin(sizes)]
        labels[moved] = next_label
        if posterior is not None:
            posterior[members] *= two.predict_proba(zc).max(axis=1)
        splits.append((int(c), next_label, sizes.tolist(), float(sep)))
        log(f"class {c} ({len(members)} boxes) split by centre density into {sizes.max()} + {sizes.min()} "
            f"(class {next_label}; separation D={sep:.2f})")
        next_label += 1
    return labels, posterior, splits


def disca_on_boxes(stack, binning=1, contrast_weight=3.0, split_separation=3.0, **kw):
    """:func:`disca` on boxes in the tomogram's units (e.g. ``extract_subvolumes(...,
    per_box=False)``): binned, each box normalised for the shape features, and with
    ``contrast_weight`` > 0 the boxes' :func:`box_contrast` next to them; then, with
    ``split_separation`` > 0, each class whose centre density is clearly bimodal is split
    in two (:func:`split_by_density`: empty-ice picks that share a class with particles).

    Measured on picks of simulated tomograms with gold and empty-ice picks (three seeds):
    empty boxes in empty-majority classes 0.72 / 0.34 / 0.43 without the split, 0.72 / 1.00
    / 0.96 with it; 2,000 sub-tomograms of five species at SNR 0.1 / 0.03 / 0.01 were not
    split (K and homogeneity unchanged)."""
    binned = bin_boxes(stack, binning)
    need_contrast = contrast_weight > 0 or split_separation > 0
    contrast = box_contrast(binned) if need_contrast else None
    res = disca(normalize_box(binned), contrast=contrast if contrast_weight > 0 else None,
                contrast_weight=contrast_weight, **kw)
    if split_separation > 0:
        log = kw.get("log", print)
        labels, post, splits = split_by_density(res["labels"], contrast[:, 1], res["posterior"],
                                                min_separation=split_separation, seed=kw.get("seed", 0), log=log)
        if splits:
            res.update(labels=labels, posterior=post, k=int(labels.max()) + 1)
        res["splits"] = splits
    return res


def class_averages(stack, labels):
    """(K, b, b, b) plain (unaligned) averages of each cluster's members."""
    k = int(labels.max()) + 1 if len(labels) else 0
    return np.stack([stack[labels == c].mean(axis=0) if np.any(labels == c)
                     else np.zeros(stack.shape[1:], np.float32) for c in range(k)]).astype(np.float32)


def clustering_scores(truth, labels):
    """Homogeneity, completeness, adjusted Rand index and accuracy after Hungarian matching."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, completeness_score, homogeneity_score
    truth = np.asarray(truth)
    tk, t_idx = np.unique(truth, return_inverse=True)
    lk, l_idx = np.unique(labels, return_inverse=True)
    cont = np.zeros((len(lk), len(tk)), int)
    np.add.at(cont, (l_idx, t_idx), 1)
    r, c = linear_sum_assignment(-cont)
    return {"homogeneity": float(homogeneity_score(t_idx, l_idx)),
            "completeness": float(completeness_score(t_idx, l_idx)),
            "ari": float(adjusted_rand_score(t_idx, l_idx)),
            "accuracy": float(cont[r, c].sum() / max(len(truth), 1)),
            "k_true": int(len(tk)), "k_found": int(len(lk))}

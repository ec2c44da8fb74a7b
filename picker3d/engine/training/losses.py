"""Losses of a training step: dense weak labels (soft Dice, cross-entropy, focal), sparse
labels (PU / PN, :mod:`picker3d.engine.pu`), and the sparse-label paper's consistency and contrastive terms."""
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..pu import contrastive_loss, pn_loss, pu_loss


def soft_dice_loss(probs, target_onehot, eps=1.0):
    """Mean over foreground classes of 1 - soft Dice (DeepETPicker §A.5)."""
    dims = (0, 2, 3, 4)
    inter = (probs * target_onehot).sum(dims)
    denom = probs.sum(dims) + target_onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


def focal_loss(logits, target, gamma=2.0, weight=None):
    logp = F.log_softmax(logits, dim=1)
    ce = F.nll_loss(logp, target, weight=weight, reduction="none")
    pt = torch.exp(-F.nll_loss(logp, target, reduction="none"))
    return ((1 - pt) ** gamma * ce).mean()


def compute_loss(name, logits, target, n_classes, class_weight=None, prior=None):
    """Loss of a batch: dense labels (``target`` class indices) with dice / ce / focal /
    dice+ce; sparse labels (``target`` centre heatmaps) with pu (``prior`` per class) or pn."""
    if name == "pu":
        return pu_loss(logits, target, prior)
    if name == "pn":
        return pn_loss(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, n_classes + 1).permute(0, 4, 1, 2, 3).float()
    if name == "dice":
        return soft_dice_loss(probs, onehot)
    if name == "ce":
        return F.cross_entropy(logits, target, weight=class_weight)
    if name == "focal":
        return focal_loss(logits, target, weight=class_weight)
    if name == "dice+ce":
        return soft_dice_loss(probs, onehot) + F.cross_entropy(logits, target, weight=class_weight)
    raise InputError(f"--loss: unknown loss '{name}' (known: dice, ce, focal, dice+ce, pu, pn)")


def consistency_view(x, rng):
    """A second view of a batch for the consistency term (the sparse-label paper Eq. 14) and the output
    dimensions to flip back: mirrored in y and/or x (at least one; mirrors keep the missing
    wedge of a tilt axis along y where it is, and the default depth-only coord-conv channel
    unchanged), contrast x U(0.8, 1.25) and fresh Gaussian noise of 0.3 std."""
    dims = [d for d, flip in ((3, rng.random() < 0.5), (4, rng.random() < 0.5)) if flip] or [int(rng.choice([3, 4]))]
    view = torch.flip(x, dims) * float(rng.uniform(0.8, 1.25))
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32)).to(x.device)
    return view + 0.3 * noise, dims


def consistency_loss(logits, view_logits, dims, sparse):
    """MSE between the output probabilities of a batch and of its view flipped back (Eq. 14)."""
    back = torch.flip(view_logits, dims)
    if sparse:      # per-class sigmoid heatmaps
        return F.mse_loss(torch.sigmoid(logits), torch.sigmoid(back))
    return F.mse_loss(torch.softmax(logits, dim=1), torch.softmax(back, dim=1))


def contrastive_term(projection, feats, view_feats, dims, heat, logits, priors, rng):
    """the sparse-label paper's contrastive module on a batch: both views' features (the view mapped back
    onto the batch's voxels) through :func:`picker3d.engine.pu.contrastive_loss`, which
    projects only the voxels it samples."""
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    return contrastive_loss(feats, torch.flip(view_feats, dims), heat, torch.sigmoid(logits.detach()), priors,
                            generator=gen, projection=projection)

"""The YOPO feature network of DISCA (§ "YOPO"), its rotation augmentation and training steps."""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class GaussianDropout(nn.Module):
    """Multiplicative 1-centred Gaussian noise, std sqrt(p / (1 - p)) (p = 0.5 -> std 1, DISCA)."""

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
        for m in self.modules():   # orthogonal kernels, zero biases (DISCA, Discussion)
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

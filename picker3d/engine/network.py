"""3D residual U-Net with coord-conv and image-pyramid inputs (DeepETPicker).

- Residual blocks (two 3x3x3 conv + BN + ReLU with a 1x1x1 projection on the skip).
- Coord-conv (DeepETPicker §A.4): three channels with the voxel's position. We use the
  position *in the whole tomogram* normalised to [-1, 1] (passed as the tile's offset and
  the volume's shape), not the position inside the patch: this keeps overlap-tile
  inference identical to whole-volume inference, and z carries where the ice slab is.
  ``coord_conv="z"`` keeps the depth only (training's default: x and y let a network trained
  on one tomogram tie targets to places, and measured worse), ``False`` none.
- Image pyramid (DeepETPicker §A.4): the input, average-pooled to each encoder level's
  resolution, is concatenated to that level's features.
- Channel widths per level, default [8, 16, 24, 36] (DeepETPicker §A.4 / Supplementary Table 13:
  as good as [24, 48, 72, 108] at a fraction of the cost).
- Output: logits for background + C classes (softmax), or one logit (sigmoid) when C = 1
  and ``binary=True``. Patch sides must be multiples of 2**(levels-1) (8 for 4 levels).
- :class:`SliceUNet` (``train --network slice2d``): the same U-Net in 2-D layers run on every
  z-slice, fused by 3-D layers at the end (the sparse-label paper's backbone, the sparse-label paper §3.3).
"""
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError

# command-line names of the position channels -> ResUNet3D(coord_conv=...)
COORD_CONV = {"z": "z", "xyz": True, "none": False}


def _layers(dims):
    """(Conv, BatchNorm, ConvTranspose) classes for 2-D or 3-D layers."""
    if dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d
    return nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d


class ResBlock(nn.Module):
    def __init__(self, cin, cout, dims=3):
        super().__init__()
        Conv, Norm, _ = _layers(dims)
        self.c1 = Conv(cin, cout, 3, padding=1, bias=False)
        self.b1 = Norm(cout)
        self.c2 = Conv(cout, cout, 3, padding=1, bias=False)
        self.b2 = Norm(cout)
        self.skip = nn.Identity() if cin == cout else nn.Sequential(
            Conv(cin, cout, 1, bias=False), Norm(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)), inplace=True)
        y = self.b2(self.c2(y))
        return F.relu(y + self.skip(x), inplace=True)


def coord_channels(shape, offset, full_shape, device, dtype):
    """(1, 3, z, y, x) global normalised coordinates of a tile at ``offset`` in ``full_shape``."""
    axes = []
    for n, o, full in zip(shape, offset, full_shape):
        idx = torch.arange(n, device=device, dtype=dtype) + float(o)
        axes.append(2.0 * idx / max(float(full) - 1.0, 1.0) - 1.0)
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack((zz, yy, xx))[None]


class ResUNet3D(nn.Module):
    dims = 3        # dimensionality of the U-Net's layers (SliceUNet: 2)

    def __init__(self, n_classes, channels=(8, 16, 24, 36), coord_conv=True, pyramid=True, binary=False,
                 heatmap=False):
        super().__init__()
        self.config = {"n_classes": n_classes, "channels": list(channels), "coord_conv": coord_conv,
                       "pyramid": pyramid, "binary": binary, "heatmap": heatmap}
        Conv, _, ConvT = _layers(self.dims)
        # heatmap head (sparse-label / PU training, the sparse-label paper): one sigmoid centre heatmap per class
        self.heatmap = heatmap
        self.n_classes = n_classes
        self.coord_conv = coord_conv
        self.pyramid = pyramid
        self.binary = binary and n_classes == 1
        self.levels = len(channels)
        extra = 1 if pyramid else 0
        if coord_conv not in (True, False, "z"):
            raise ValueError(f"coord_conv must be True, False or 'z', not {coord_conv!r}")
        cin = 1 + {True: 3, False: 0, "z": 1}[coord_conv]
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        for i, c in enumerate(channels):
            self.enc.append(ResBlock(cin + (extra if i > 0 else 0), c, self.dims))
            if i < self.levels - 1:
                self.down.append(Conv(c, c, 2, stride=2, bias=False))
            cin = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(self.levels - 1, 0, -1):
            self.up.append(ConvT(channels[i], channels[i - 1], 2, stride=2, bias=False))
            self.dec.append(ResBlock(2 * channels[i - 1], channels[i - 1], self.dims))
        n_out = n_classes if heatmap else (1 if self.binary else n_classes + 1)
        self.head = nn.Conv3d(channels[0], n_out, 1)     # always 3-D (SliceUNet's output is a volume)
        if heatmap:
            # start from p = 0.01 everywhere (focal-loss practice): from p = 0.5 the millions
            # of background voxels swamp the few centres in the first steps
            nn.init.constant_(self.head.bias, -math.log(99.0))
        # channels-last 3D layout: oneDNN's fast convolution path on CPUs (measured 1.45x
        # faster training and 1.8x faster inference for [16,32,48,64] on 2 cores); the
        # input is converted in forward(), so callers need not care
        self._channels_last()

    def _channels_last(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                m.to(memory_format=torch.channels_last_3d)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.to(memory_format=torch.channels_last)

    @property
    def multiple(self):
        return 2 ** (self.levels - 1)

    def forward(self, x, offset=(0, 0, 0), full_shape=None, features=False):
        """``x``: (B, 1, Z, Y, X) normalised density; returns logits (B, K, Z, Y, X), and with
        ``features`` also the last feature map the head reads (B, channels[0], Z, Y, X).

        ``offset`` is the patch's corner in the whole volume of shape ``full_shape`` (for
        coord-conv); give a list of corners (and of shapes) to batch patches from
        different places.
        """
        x = x.contiguous(memory_format=torch.channels_last_3d)
        return self._head(self._unet(self._with_coords(x, offset, full_shape), x), features)

    def _head(self, f, features):
        out = self.head(f).contiguous()
        return (out, f) if features else out

    def _with_coords(self, x, offset, full_shape):
        """``x`` with the coord-conv channels appended (as configured)."""
        if not self.coord_conv:
            return x
        full_shape = full_shape or x.shape[2:]
        if isinstance(offset[0], (tuple, list)):
            # one offset (and volume shape) per batch item: patches from different places
            shapes = full_shape if isinstance(full_shape[0], (tuple, list)) else [full_shape] * len(offset)
            cc = torch.cat([coord_channels(x.shape[2:], o, s, x.device, x.dtype)
                            for o, s in zip(offset, shapes)])
        else:
            cc = coord_channels(x.shape[2:], offset, full_shape, x.device, x.dtype).expand(
                x.shape[0], -1, -1, -1, -1)
        if self.coord_conv == "z":
            cc = cc[:, :1]      # depth in the tomogram only (where the ice slab is)
        return torch.cat([x, cc], dim=1)

    def _unet(self, x, inp):
        """Encoder-decoder features at full resolution; ``inp`` (the density alone) feeds the
        image pyramid."""
        pool = F.avg_pool3d if self.dims == 3 else F.avg_pool2d
        skips = []
        for i, block in enumerate(self.enc):
            if i > 0:
                x = self.down[i - 1](x)
                if self.pyramid:
                    x = torch.cat([x, pool(inp, 2 ** i)], dim=1)
            x = block(x)
            skips.append(x)
        for j, (up, dec) in enumerate(zip(self.up, self.dec)):
            x = up(x)
            x = dec(torch.cat([x, skips[-2 - j]], dim=1))
        return x

    def probabilities(self, logits):
        """(B, K, ...) class probabilities, background first (K = C + 1). A heatmap head gives
        per-class centre probabilities; background = 1 - their maximum, so the picking
        post-processing is the same for both kinds of model."""
        if self.heatmap:
            p = torch.sigmoid(logits)
            return torch.cat([1 - p.amax(dim=1, keepdim=True), p], dim=1)
        if self.binary:
            p = torch.sigmoid(logits)
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)


class SliceUNet(ResUNet3D):
    """Slice encoding fused by 3-D layers (sparse-label paper §3.3 / Fig. 2a).

    The U-Net above, built from 2-D layers, runs on every z-slice independently (the x-y
    view is the one without missing-wedge distortion); a residual block of two 3x3x3
    convolutions then fuses neighbouring slices (the paper's "3-D convolutional layers
    only in the last two layers") before the same 1x1x1 head. Same inputs, outputs,
    coord-conv and pyramid options as :class:`ResUNet3D`, so training, tiling and picking
    need not know which network they run.
    """
    dims = 2

    def __init__(self, n_classes, channels=(8, 16, 24, 36), coord_conv=True, pyramid=True, binary=False,
                 heatmap=False):
        super().__init__(n_classes, channels, coord_conv, pyramid, binary, heatmap)
        self.config["network"] = "slice2d"
        self.fusion = ResBlock(channels[0], channels[0], dims=3)
        self._channels_last()

    def forward(self, x, offset=(0, 0, 0), full_shape=None, features=False):
        B, _, Z, Y, X = x.shape

        def slices(t):      # (B, C, Z, Y, X) -> (B*Z, C, Y, X)
            return t.permute(0, 2, 1, 3, 4).reshape(B * Z, t.shape[1], Y, X).contiguous(
                memory_format=torch.channels_last)

        f = self._unet(slices(self._with_coords(x, offset, full_shape)), slices(x))
        f = f.reshape(B, Z, f.shape[1], Y, X).permute(0, 2, 1, 3, 4).contiguous(
            memory_format=torch.channels_last_3d)
        return self._head(self.fusion(f), features)


# names of the networks -> classes (``train --network``); a model file records its choice
# in its architecture config ("network"; files without it are ResUNet3D)
NETWORKS = {"resunet3d": ResUNet3D, "slice2d": SliceUNet}


def build_network(config):
    """The network a model file's architecture config describes."""
    config = dict(config)
    kind = config.pop("network", "resunet3d")
    if kind not in NETWORKS:
        raise ValueError(f"unknown network '{kind}' (known: {', '.join(NETWORKS)})")
    return NETWORKS[kind](**config)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def flops_per_voxel(model, size=32):
    """Multiply-accumulates x2 per output voxel, counted with forward hooks on conv layers."""
    total = [0]

    def hook(mod, inp, out):
        # weights are (out, in, k...) for convolutions, (in, out, k...) for transposed ones
        per_item = math.prod(mod.weight.shape[1:])
        if isinstance(mod, (nn.ConvTranspose3d, nn.ConvTranspose2d)):
            total[0] += 2 * inp[0].numel() * per_item
        else:
            total[0] += 2 * out.numel() * per_item

    convs = (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convs)]
    was = model.training
    model.eval()
    with torch.inference_mode():
        model(torch.zeros(1, 1, size, size, size))
    model.train(was)
    for h in hs:
        h.remove()
    return total[0] / size ** 3


# ----------------------------------------------------------------------------------------
# arithmetic precision
# ----------------------------------------------------------------------------------------

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16():
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX): only then is
    bfloat16 faster than float32. Read from /proc/cpuinfo; unknown (not Linux) = False."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def autocast_dtype(device, precision="auto", training=False):
    """The dtype of ``torch.autocast`` for a device and a ``--precision``, or None (float32).

    ``auto``: on a CPU with native bfloat16, bfloat16 (2-core AVX512-BF16 machine, network
    [8,16,24,36]: inference of a 48x128x128 tile 2.7-3.9x faster, a training step of 8 x 32³
    1.45x, measured); on CUDA float16 for inference and bfloat16 for training where the GPU
    has it (float16 training would need loss scaling); float32 elsewhere. Weights, losses
    and the probabilities stay float32 either way.
    """
    if precision not in PRECISIONS:
        raise InputError(f"--precision: '{precision}' must be one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if kind == "cuda":
        if not training:
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if kind == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device, dtype):
    """``torch.autocast`` for ``dtype`` from :func:`autocast_dtype` (None: a no-op context)."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=dtype or torch.float32, enabled=dtype is not None)

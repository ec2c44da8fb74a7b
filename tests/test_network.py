"""The networks: output shapes, precision, coord-conv, the slice network's reach."""
import numpy as np
import pytest
import torch

from picker3d.engine.network import ResUNet3D, SliceUNet, autocast_dtype
from picker3d.engine.picking.tiles import predict_volume


@pytest.mark.parametrize("network", [ResUNet3D, SliceUNet])
@pytest.mark.parametrize("shape", [(24, 40, 56), (8, 16, 32)])
def test_network_output_shape(shape, network):
    net = network(3).eval()
    with torch.inference_mode():
        out = net(torch.zeros((2, 1) + shape))
    assert out.shape == (2, 4) + shape


def test_precision_choice_and_bfloat16_inference_matches_float32():
    assert autocast_dtype("cpu", "fp32") is None
    assert autocast_dtype("cpu", "bf16") == torch.bfloat16
    assert autocast_dtype("cuda", "auto") == torch.float16        # inference on a GPU: half precision
    with pytest.raises(ValueError, match="--precision"):
        autocast_dtype("cpu", "fp16")
    torch.manual_seed(0)
    net = ResUNet3D(2).eval()
    vol = np.random.default_rng(1).normal(size=(24, 40, 40)).astype(np.float32)
    full = predict_volume(net, vol, tile=32, pad=8, precision="fp32")
    half = predict_volume(net, vol, tile=32, pad=8, precision="bf16")
    assert half.dtype == np.float32 and np.allclose(half.sum(0), 1.0, atol=1e-5)
    diff = np.abs(full - half)
    assert 0 < diff.max() and diff.mean() < 0.01       # really computed in bfloat16, and close


def test_batched_coord_conv_equals_one_patch_at_a_time():
    torch.manual_seed(0)
    net = ResUNet3D(2).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    offs, shapes = [(0, 8, 16), (4, 0, 0)], [(40, 40, 40), (32, 64, 64)]
    with torch.inference_mode():
        batched = net(x, offset=offs, full_shape=shapes)
        single = torch.cat([net(x[i:i + 1], offset=offs[i], full_shape=shapes[i]) for i in range(2)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_depth_only_coord_conv_ignores_x_and_y():
    """coord_conv="z" (training's default): the output depends on the depth of the tile in the
    tomogram, not on where it lies in x and y; with x, y, z it does."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 16)
    full = (40, 64, 64)
    for mode, xy_matters in (("z", False), (True, True)):
        net = ResUNet3D(2, coord_conv=mode).eval()
        with torch.inference_mode():
            ref = net(x, offset=(0, 0, 0), full_shape=full)
            moved_xy = net(x, offset=(0, 24, 40), full_shape=full)
            moved_z = net(x, offset=(20, 0, 0), full_shape=full)
        assert torch.allclose(ref, moved_xy, atol=1e-6) != xy_matters
        assert not torch.allclose(ref, moved_z, atol=1e-4)
    with pytest.raises(ValueError, match="coord_conv"):
        ResUNet3D(2, coord_conv="xy")


def test_slice_network_sees_two_slices_either_side_only():
    """SliceUNet (the sparse-label paper §3.3): 2-D layers per slice, then two 3x3x3 convolutions, so a change
    in slice k reaches the output at slices k-2..k+2 and nowhere else; the 3-D U-Net's
    receptive field spans the whole patch."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 24, 32, 32)
    y = x.clone()
    y[0, 0, 12] += torch.randn(32, 32)
    for net, reach in ((SliceUNet(2, coord_conv="z").eval(), 2), (ResUNet3D(2, coord_conv="z").eval(), None)):
        with torch.inference_mode():
            changed = (net(x) - net(y)).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
        z = torch.nonzero(changed).ravel().tolist()
        if reach is None:
            assert z[0] < 12 - 2 and z[-1] > 12 + 2
        else:
            assert z == list(range(12 - reach, 12 + reach + 1))

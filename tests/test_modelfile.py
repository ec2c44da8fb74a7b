"""The model file: errors on bad files, round trips."""
import pytest
import torch

from picker3d.engine.network import SliceUNet


def test_model_file_errors(tmp_path):
    from picker3d.engine.errors import InputError
    from picker3d.engine.modelfile import load_model
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.pt: not a readable picker3d model"):
        load_model(str(tmp_path / "junk.pt"))
    torch.save({"format": "picker3d-model", "version": 99}, tmp_path / "new.pt")
    with pytest.raises(InputError, match="newer than this picker3d"):
        load_model(str(tmp_path / "new.pt"))


def test_slice_network_model_file_round_trip(tmp_path):
    from picker3d.engine.modelfile import load_model, save_model
    torch.manual_seed(0)
    net = SliceUNet(2, channels=(4, 8, 8, 8), heatmap=True, coord_conv="z").eval()
    save_model(str(tmp_path / "m.pt"), net, {"classes": ["a", "b"]})
    back, meta = load_model(str(tmp_path / "m.pt"))
    x = torch.randn(1, 1, 16, 16, 16)
    assert isinstance(back, SliceUNet) and meta["arch"]["network"] == "slice2d"
    with torch.inference_mode():
        torch.testing.assert_close(back(x), net(x))

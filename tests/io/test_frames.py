"""Frame reading, the resize / normalise / pad rule and its inverse, overlays and mp4 writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deva.inference.preprocess import (
    Padding,
    image_to_tensor,
    normalize_image,
    preprocess_frame,
    preprocess_mask,
    probabilities_to_ids,
    resize_image,
    resized_size,
    restore_probabilities,
)
from deva.io.frames import FrameReader, list_frame_files, natural_sorted, read_frame
from deva.io.masks import id_colours, read_mask_png, write_mask_png
from deva.io.video import Mp4Writer, mask_boundaries, overlay_mask, write_mp4


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blocky_mask(h: int, w: int, seed: int = 0, block: int = 12, ids: int = 4) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(0, ids, (h // block + 1, w // block + 1))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[:h, :w]


# ------------------------------------------------------------------------ natural sort


def test_natural_sort() -> None:
    names = ["10.jpg", "2.jpg", "1.jpg", "frame_9.png", "frame_10.png", "Frame_11.png"]
    assert natural_sorted(names) == [
        "1.jpg",
        "2.jpg",
        "10.jpg",
        "frame_9.png",
        "frame_10.png",
        "Frame_11.png",
    ]
    assert natural_sorted(["a2b10", "a2b9", "a10b1"]) == ["a2b9", "a2b10", "a10b1"]
    assert natural_sorted(["00010", "00002", "00001"]) == ["00001", "00002", "00010"]


# ------------------------------------------------------------------------ geometry


def test_resized_size_rule() -> None:
    assert resized_size(236, 426) == (480, 866)
    assert resized_size(426, 236) == (866, 480)
    assert resized_size(480, 854) == (480, 854)
    assert resized_size(100, 100) == (480, 480)
    assert resized_size(236, 426, -1) == (236, 426)
    assert resized_size(240, 320, 120) == (120, 160)


def test_preprocess_example_from_architecture() -> None:
    image, geometry = preprocess_frame(_frame(236, 426))
    assert image.shape == (3, 480, 880) and image.dtype == torch.float32
    assert geometry.original_size == (236, 426)
    assert geometry.resized_size == (480, 866)
    assert geometry.padding == Padding(left=7, right=7, top=0, bottom=0)
    assert geometry.padded_size == (480, 880)
    assert (image[..., :7] == 0).all() and (image[..., -7:] == 0).all()


def test_odd_padding_goes_bottom_right() -> None:
    _, geometry = preprocess_frame(_frame(100, 141), shorter_side=-1)
    # 100 -> 112 (6 top, 6 bottom); 141 -> 144 (1 left, 2 right)
    assert geometry.padding == Padding(left=1, right=2, top=6, bottom=6)


def test_normalisation() -> None:
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    frame = np.broadcast_to(np.round(mean * 255).astype(np.uint8), (32, 48, 3)).copy()
    image, _ = preprocess_frame(frame, shorter_side=-1)
    expected = (np.round(mean * 255) / 255 - mean) / std
    np.testing.assert_allclose(image[:, 0, 0].numpy(), expected, atol=1e-6)
    white = normalize_image(torch.ones(3, 1, 1)).flatten().numpy()
    np.testing.assert_allclose(white, (1 - mean) / std, rtol=1e-6)


def test_downscaling_is_antialiased() -> None:
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    image = torch.from_numpy(checker).float().div(255).expand(3, 64, 64)
    small = resize_image(image, (16, 16))
    assert small.std() < 0.02  # averaged to grey, no aliasing pattern
    assert abs(small.mean().item() - 0.5) < 0.02


def test_image_round_trip_at_original_size() -> None:
    frame = _frame(50, 70)
    image, geometry = preprocess_frame(frame, shorter_side=-1)
    assert image.shape == (3, 64, 80)
    restored = restore_probabilities(image[None], geometry)[0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    back = (restored * std + mean) * 255
    np.testing.assert_allclose(back.permute(1, 2, 0).numpy(), frame, atol=1e-3)


def test_mask_resize_and_pad() -> None:
    mask = _blocky_mask(236, 426)
    _, geometry = preprocess_frame(_frame(236, 426))
    resized = preprocess_mask(mask, geometry)
    assert resized.shape == (480, 880) and resized.dtype == torch.int64
    assert set(resized.unique().tolist()) <= set(np.unique(mask).tolist())
    assert (resized[:, :7] == 0).all() and (resized[:, -7:] == 0).all()
    large = preprocess_mask(torch.from_numpy(mask * 100_000), geometry)
    assert set(large.unique().tolist()) <= set((np.unique(mask) * 100_000).tolist())
    with pytest.raises(ValueError, match="does not match"):
        preprocess_mask(mask[:-1], geometry)


def test_probability_round_trip() -> None:
    # Up-sampling then back is nearly exact; down-sampling loses thin details (12 px blocks
    # become 4.8 px); the original size is exact.
    cases = (((236, 426), 480, 0.999), ((300, 200), 120, 0.9), ((50, 70), -1, 1.0))
    for size, shorter, expected in cases:
        mask = _blocky_mask(*size)
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(mask), 4).permute(2, 0, 1)
        _, geometry = preprocess_frame(_frame(*size), shorter_side=shorter)
        prob = preprocess_mask(one_hot.float(), geometry)
        assert prob.shape[-2:] == geometry.padded_size
        channels = list(range(1, prob.shape[-3]))  # channel i is id i
        back = probabilities_to_ids(prob, channels, geometry)
        assert back.shape == size
        agreement = (back.numpy() == mask).mean()
        assert agreement >= expected
        batched = probabilities_to_ids(prob[None].expand(2, -1, -1, -1), channels, geometry)
        assert batched.shape == (2, *size)


# ------------------------------------------------------------------------ reading frames


def _write_png(path: Path, frame: np.ndarray) -> None:
    Image.fromarray(frame).save(path)


def test_folder_reading_order_names_and_colours(tmp_path: Path) -> None:
    red = np.zeros((8, 12, 3), np.uint8)
    red[..., 0] = 255
    for i, name in enumerate(["10.png", "2.png", "1.jpg"]):
        frame = red.copy()
        frame[0, 0] = i
        if name.endswith(".png"):
            _write_png(tmp_path / name, frame)
        else:
            Image.fromarray(frame).save(tmp_path / name, quality=100)
    (tmp_path / "notes.txt").write_text("not a frame")
    _write_png(tmp_path / ".hidden.png", red)
    assert [p.name for p in list_frame_files(tmp_path)] == ["1.jpg", "2.png", "10.png"]
    reader = FrameReader(tmp_path)
    assert len(reader) == 3 and not reader.is_video and reader.fps is None
    frames = list(reader)
    assert [name for name, _ in frames] == ["1", "2", "10"]
    for _, frame in frames:
        assert frame.shape == (8, 12, 3) and frame.dtype == np.uint8
        assert frame[4, 4, 0] > 240 and frame[4, 4, 1:].max() < 15  # RGB, not BGR
    assert [n for n, _ in reader] == ["1", "2", "10"]  # re-iterable


def test_grey_and_rgba_frames_become_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 6), 77, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((5, 6, 4), 200, np.uint8)).save(tmp_path / "rgba.png")
    assert read_frame(tmp_path / "grey.png").shape == (5, 6, 3)
    assert read_frame(tmp_path / "rgba.png").shape == (5, 6, 3)


def test_folder_is_read_lazily_and_corrupt_file_is_named(tmp_path: Path) -> None:
    for i in range(3):
        _write_png(tmp_path / f"{i:05d}.png", _frame(8, 8, i))
    (tmp_path / "00003.jpg").write_bytes(b"this is not a jpeg")
    iterator = iter(FrameReader(tmp_path))
    assert [next(iterator)[0] for _ in range(3)] == ["00000", "00001", "00002"]
    with pytest.raises(ValueError, match=r"cannot decode frame .*00003\.jpg"):
        next(iterator)


def test_missing_and_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        FrameReader(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        FrameReader(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        read_frame(tmp_path / "gone.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no frames .* found in .*empty"):
        FrameReader(tmp_path / "empty")
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot decode frame .*zero.jpg"):
        read_frame(tmp_path / "zero.jpg")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported frame source"):
        FrameReader(tmp_path / "notes.txt")


def test_corrupt_video(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 64 + b"definitely not an mp4")
    with pytest.raises(ValueError, match="broken.mp4"):
        list(FrameReader(path))


# ------------------------------------------------------------------------ mp4 and overlays


def test_mp4_round_trip(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (250, 250, 0)]
    frames = [np.broadcast_to(np.array(c, np.uint8), (33, 47, 3)).copy() for c in colours]
    path = tmp_path / "clip.mp4"
    assert write_mp4(path, frames, fps=10) == 5
    reader = FrameReader(path)
    assert reader.is_video and reader.fps == pytest.approx(10)
    decoded = list(reader)
    assert [name for name, _ in decoded] == ["00000", "00001", "00002", "00003", "00004"]
    for (_, frame), colour in zip(decoded, colours):
        assert frame.shape == (34, 48, 3)  # padded to even sizes for yuv420p
        np.testing.assert_allclose(frame[:33, :47].reshape(-1, 3).mean(0), colour, atol=12)


def test_mp4_writer_rejects_size_change(tmp_path: Path) -> None:
    with Mp4Writer(tmp_path / "a.mp4") as writer:
        writer.write(_frame(16, 16))
        with pytest.raises(ValueError, match="differs"):
            writer.write(_frame(16, 18))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((16, 16, 3), np.float32))


def test_overlay() -> None:
    frame = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((20, 30), np.int64)
    mask[5:15, 5:15] = 1
    mask[5:15, 20:25] = 300
    out = overlay_mask(frame, mask, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], frame[0, 0])  # background untouched
    colour = id_colours(np.array(1))
    np.testing.assert_array_equal(out[10, 10], np.round(0.5 * 100 + 0.5 * colour))
    np.testing.assert_array_equal(out[5, 10], colour)  # outline at full colour
    assert not np.array_equal(out[10, 22], frame[10, 22])  # ids above 255 are coloured too
    plain = overlay_mask(frame, mask, outline_width=0)
    np.testing.assert_array_equal(plain[5, 10], np.round(0.5 * 100 + 0.5 * colour))
    edge = mask_boundaries(mask)
    assert edge[5, 10] and not edge[10, 10] and not edge[4, 10]
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(frame, mask[:-1])


def test_mask_png_auto_format(tmp_path: Path) -> None:
    small = _blocky_mask(10, 14, ids=5)
    write_mask_png(tmp_path / "small.png", small)
    with Image.open(tmp_path / "small.png") as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_mask_png(tmp_path / "small.png"), small)
    large = small * 1000
    write_mask_png(tmp_path / "large.png", large)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "large.png"), large)
    with pytest.raises(FileNotFoundError, match="none.png"):
        read_mask_png(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.png"):
        read_mask_png(tmp_path / "bad.png")


def test_argmax_channels_equals_torch_argmax_with_ties_and_nan() -> None:
    from deva.inference.preprocess import argmax_channels

    torch.manual_seed(0)
    prob = torch.rand(2, 4, 7, 9).round(decimals=1)  # many exact ties: the first channel wins
    prob[0, 2, 3, 3] = float("nan")
    got = argmax_channels(prob)
    assert got.dtype == torch.int64
    assert torch.equal(got, prob.argmax(dim=-3))
    plane = torch.rand(1, 5, 6)
    assert torch.equal(argmax_channels(plane), torch.zeros(5, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="zero channels"):
        argmax_channels(torch.zeros(0, 2, 2))


def test_image_to_tensor_converts_on_the_device() -> None:
    """The uint8 frame moves first and is converted where it lands (a quarter of the bytes to
    copy to a GPU); on the CPU the result is unchanged."""
    frame = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    want = torch.from_numpy(frame).permute(2, 0, 1).double() / 255
    got = image_to_tensor(frame, "cpu")
    assert got.dtype == torch.float32 and got.shape == (3, 5, 7)
    torch.testing.assert_close(got.double(), want, atol=1e-7, rtol=0)
    assert torch.equal(got, image_to_tensor(frame))
    on_meta = image_to_tensor(frame, "meta")  # no data, but shows where the work happens
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float32
    with pytest.raises(ValueError, match="RGB frame"):
        image_to_tensor(frame[..., :2], "cpu")

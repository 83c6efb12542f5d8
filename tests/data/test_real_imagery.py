"""tools/make_real.py and deva.data.real_imagery: real cut-outs and backgrounds from Debian
packages (read in Python), split by source image, as static pairs and pseudo-videos."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deva.cli import train as train_cli
from deva.data.debian import package_files, read_package
from deva.data.real_imagery import (
    CutoutAppearance,
    is_photograph,
    source_key,
    split_of,
)
from deva.data.static import scan_image_pairs
from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.data.synthetic.appearance import ProceduralAppearance
from deva.data.synthetic_clips import SyntheticClipDataset
from deva.modeling.checkpoint import load_file, split_checkpoint
from deva.training.tasks.vos import vos_folder_videos
from tests.helpers import load_tool

STAMPS = "usr/share/tuxpaint/stamps"


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _photo_cutout(rng: np.random.Generator, size: int = 72) -> np.ndarray:
    """A noisy RGBA disc: many distinct colours (a 'photograph') with an exact alpha mask."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (size, size, 3))
    alpha = np.zeros((size, size), np.uint8)
    cv2.circle(alpha, (size // 2, size // 2), size // 2 - 4, 255, -1)
    rgba[..., 3] = alpha
    return rgba


def _drawing(size: int = 72) -> np.ndarray:
    """Clip-art: two flat colours."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[: size // 2, :, :3] = (200, 30, 30)
    rgba[size // 2 :, :, :3] = (30, 30, 200)
    rgba[5 : size - 5, 5 : size - 5, 3] = 255
    return rgba


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_deb(path: Path, name: str, files: dict[str, bytes], *, licence: bool = True) -> Path:
    """A Debian package file (ar: debian-binary, control.tar.xz, data.tar.xz)."""
    if licence:
        files = {**files, f"usr/share/doc/{name}/copyright": f"License: GPL-2 ({name})\n".encode()}
    control = f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\n".encode()
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", _tar_xz({"control": control})),
        ("data.tar.xz", _tar_xz(files)),
    ]
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for member, data in members:
            header = f"{member:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
            handle.write(header.encode("ascii") + data + (b"\n" if len(data) % 2 else b""))
    return path


def make_packages(root: Path, *, licence: bool = True) -> dict[str, Path]:
    """A tiny stamps package (12 photo sources, two with a mirrored variant, 3 drawings) and a
    tiny wallpaper package (8 pictures, one in two sizes, one plain white)."""
    rng = np.random.default_rng(0)
    stamps = {}
    for k in range(12):
        stamps[f"{STAMPS}/animals/thing{chr(97 + k)}.png"] = _png(_photo_cutout(rng))
    stamps[f"{STAMPS}/animals/thinga_mirror.png"] = _png(_photo_cutout(rng))
    stamps[f"{STAMPS}/food/thingb-2.png"] = _png(_photo_cutout(rng))
    for k in range(3):
        stamps[f"{STAMPS}/symbols/sign{k}.png"] = _png(_drawing())
    stamps[f"{STAMPS}/animals/thinga.txt"] = b"description"
    walls = {}
    for k in range(8):
        picture = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        walls[f"usr/share/wallpapers/Wall{k}/contents/images/128x96.jpg"] = _jpeg(picture)
    big = cv2.resize(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (160, 120))
    walls["usr/share/wallpapers/Wall0/contents/images/160x120.jpg"] = _jpeg(big)
    walls["usr/share/backgrounds/white.png"] = _png(np.full((96, 128, 3), 255, np.uint8))
    return {
        "stamps": make_deb(root / "stamps_1.0-1_all.deb", "stamps", stamps),
        "walls": make_deb(root / "walls_1.0-1_all.deb", "walls", walls, licence=licence),
    }


def run_tool(debs: dict[str, Path], output: Path, *extra: str) -> int:
    tool = load_tool("make_real")
    argv = [
        f"output={output}",
        "cutouts=[stamps]",
        "backgrounds=[walls]",
        *(f"+debs.{name}={path}" for name, path in debs.items()),
        "val_fraction=0.3",
        "videos={train: 1, val: 2}",
        "video.num_frames=5",
        "video.height=48",
        "video.width=64",
        "video.num_objects=2",
        "min_background_side=64",
        *extra,
    ]
    return tool.main(argv)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "run.json"
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("real")
    debs = make_packages(root)
    assert run_tool(debs, root / "out") == 0
    return root / "out", debs


def test_debian_package_is_read_without_dpkg(tmp_path: Path) -> None:
    debs = make_packages(tmp_path)
    package = read_package(debs["stamps"])
    assert (package.name, package.version) == ("stamps", "1.0-1")
    names = [name for name, _ in package_files(package)]
    assert f"{STAMPS}/animals/thinga.png" in names and "usr/share/doc/stamps/copyright" in names
    (tmp_path / "fake.deb").write_bytes(b"not a package")
    with pytest.raises(ValueError, match="not a Debian package"):
        read_package(tmp_path / "fake.deb")


def test_photographs_sources_and_split() -> None:
    rng = np.random.default_rng(1)
    assert is_photograph(_photo_cutout(rng), min_pixels=100)
    assert not is_photograph(_drawing(), min_pixels=100)
    assert not is_photograph(_photo_cutout(rng, size=12), min_pixels=100)  # too few pixels
    assert source_key("a/b/cat_mirror.png") == source_key("x/cat.png") == "cat"
    assert source_key("a/cep-2.png") == source_key("a/cep-1.png") == "cep"
    assert source_key("w/Autumn/contents/images/1920x1080.jpg") == "autumn"
    assert source_key("w/Storm_3840x2160.jpg") == source_key("w/Storm.jpg") == "storm"
    keys = [f"k{i}" for i in range(400)]
    splits = [split_of(k, val_fraction=0.2, seed=0) for k in keys]
    assert splits == [split_of(k, val_fraction=0.2, seed=0) for k in keys]
    assert 0.12 < splits.count("val") / len(keys) < 0.28
    assert splits != [split_of(k, val_fraction=0.2, seed=1) for k in keys]


def test_tool_writes_the_layout_split_by_source(built) -> None:
    out, _ = built
    sources = json.loads((out / "sources.json").read_text())
    cutouts = [f for f in sources["files"] if f["file"].startswith("cutouts/")]
    assert len(cutouts) == 14  # 12 sources + 2 variants; the 3 drawings and the .txt left out
    split_by_key: dict[str, set[str]] = {}
    for entry in sources["files"]:
        split_by_key.setdefault(entry["source"], set()).add(entry["split"])
        assert (out / entry["file"]).is_file()
    assert all(len(s) == 1 for s in split_by_key.values())  # a source lies in one split
    assert {f["split"] for f in cutouts} == {"train", "val"}
    backgrounds = [f for f in sources["files"] if f["file"].startswith("backgrounds/")]
    assert len(backgrounds) == 8  # one per wallpaper (the larger size), the plain one left out
    wall0 = next(f for f in backgrounds if f["source"] == "wall0")
    assert wall0["member"].endswith("160x120.jpg")
    assert (out / "licences/stamps.copyright").read_text().startswith("License: GPL-2")
    assert {p["name"] for p in sources["packages"]} == {"stamps", "walls"}
    rgba = np.asarray(Image.open(out / cutouts[0]["file"]))
    assert rgba.shape[2] == 4 and rgba[..., 3].min() == 0 and rgba[..., 3].max() == 255


def test_static_pairs_are_read_by_the_static_stage(built) -> None:
    out, _ = built
    for split in ("train", "val"):
        records = scan_image_pairs(out / "static" / split)
        expected = sum(1 for p in (out / "cutouts" / split).glob("*.png")) * 2
        assert len(records) == expected
    image = cv2.imread(str(records[0].images[0]))
    mask = cv2.imread(str(records[0].masks[0]), cv2.IMREAD_UNCHANGED)
    assert mask.ndim == 2 and mask.shape == image.shape[:2]
    assert set(np.unique(mask)) == {0, 255} and 0.01 < (mask > 0).mean() < 0.9


def test_pseudo_videos_are_a_validation_set(built) -> None:
    out, _ = built
    videos = vos_folder_videos(out / "videos" / "val", "generic")
    assert len(videos) == 2
    meta = json.loads((out / "videos/val/Meta/video_000/meta.json").read_text())
    assert len(meta["objects"]) == 2
    cutout_names = {p.stem for p in (out / "cutouts" / "val").glob("*.png")}
    assert {obj["shape"] for obj in meta["objects"]} <= cutout_names  # val cut-outs only
    train_meta = json.loads((out / "videos/train/Meta/video_000/meta.json").read_text())
    train_names = {p.stem for p in (out / "cutouts" / "train").glob("*.png")}
    assert {obj["shape"] for obj in train_meta["objects"]} <= train_names


def test_tool_is_deterministic(built, tmp_path: Path) -> None:
    out, debs = built
    assert run_tool(debs, tmp_path / "again") == 0
    assert _tree_digest(tmp_path / "again") == _tree_digest(out)


def test_pseudo_video_generator(built) -> None:
    out, _ = built
    appearance = CutoutAppearance.from_folder(out, "train")
    config = SyntheticVideoConfig(
        num_frames=6, height=64, width=80, num_objects=3, object_radius=(0.2, 0.3)
    )
    first = generate_video(config, 7, appearance)
    second = generate_video(config, 7, CutoutAppearance.from_folder(out, "train"))
    assert np.array_equal(first.frames, second.frames)
    assert np.array_equal(first.masks, second.masks)
    assert not np.array_equal(first.frames, generate_video(config, 8, appearance).frames)
    assert first.masks.max() <= 3 and first.visible.any(axis=0).all()
    # Ground truth follows the pasted cut-out: where an object is labelled, the frame is
    # not the background that the procedural scene of the same seed would show.
    plain = generate_video(config, 7)
    assert not np.array_equal(plain.frames, first.frames)
    # The procedural appearance is the default, unchanged.
    explicit = generate_video(config, 7, ProceduralAppearance())
    assert np.array_equal(plain.frames, explicit.frames)


def test_training_clips_mix_real_and_procedural_videos(built) -> None:
    out, _ = built
    appearance = CutoutAppearance.from_folder(out, "train")
    kinds = set()
    for fraction, expected in ((1.0, {"real"}), (0.0, {"synthetic"})):
        dataset = SyntheticClipDataset(
            length=4,
            num_frames=3,
            crop_size=48,
            video_frames=6,
            height=48,
            width=64,
            min_object_pixels=10,
            fixed_seed=3,
            appearance=appearance,
            appearance_fraction=fraction,
            video={"object_radius": (0.2, 0.3)},
        )
        names = {dataset[i]["info"]["name"].split("_")[0] for i in range(3)}
        assert names == expected
        kinds |= names
        sample = dataset[0]
        assert tuple(sample["frames"].shape) == (3, 3, 48, 48) and sample["num_objects"] >= 1
    assert kinds == {"real", "synthetic"}


def test_bad_input_is_one_line_and_user_files_stay(built, tmp_path: Path, capsys) -> None:
    _, debs = built
    assert run_tool({}, tmp_path / "x", "cutouts=[]") == 2
    assert "make_real: error: cutouts=[...] and backgrounds=[...]" in capsys.readouterr().err
    assert run_tool({"nope": debs["stamps"], **debs}, tmp_path / "x") == 2
    assert "debs names packages that are not used: nope" in capsys.readouterr().err
    assert run_tool({"stamps": debs["walls"], "walls": debs["walls"]}, tmp_path / "x") == 2
    assert "is package walls, not stamps" in capsys.readouterr().err
    bad = tmp_path / "broken.deb"
    bad.write_bytes(b"!<arch>\n")
    assert run_tool({"stamps": bad, "walls": debs["walls"]}, tmp_path / "x") == 2
    assert "no control.tar" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert run_tool(debs, mine) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make_real: error:" in err
    assert (mine / "notes.txt").read_text() == "keep"
    (tmp_path / "u").mkdir()
    unlicensed = make_packages(tmp_path / "u", licence=False)
    assert run_tool(unlicensed, tmp_path / "y") == 2
    assert "no copyright file in walls: its licence is unknown" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_the_real_stages_train_from_the_folder(built, tmp_path: Path) -> None:
    """stage=real_static on the static pairs, then stage=real on pseudo-videos from its
    weights, with the validation pseudo-videos as a set the Predictor reports."""
    out, _ = built
    shrink = [
        "stage.iterations=2",
        "stage.crop_size=48",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.persistent_workers=false",
        "data.min_object_pixels=10",
        "validation.at_start=false",
        "validation.sets.synthetic=null",
        "validation.sets.panoptic=null",
        f"+validation.sets.real={{type: generic, root: {out}/videos/val, size: 48}}",
        "logger=none",
    ]
    static = tmp_path / "static"
    argv = ["stage=real_static", f"data.roots=[{out}/static/train]", f"output_dir={static}"]
    assert train_cli.main([*argv, *shrink]) == 0
    video = tmp_path / "video"
    argv = ["stage=real", f"data.real_root={out}", f"model.weights={static}/model.pth"]
    argv += [f"output_dir={video}", "data.height=48", "data.width=64", "data.video_frames=6"]
    assert train_cli.main([*argv, *shrink]) == 0
    history = json.loads((video / "validation_history.json").read_text())
    assert 0 <= history[max(history, key=int)]["val/real/jf"] <= 1
    state, _ = split_checkpoint(load_file(video / "model.pth"))
    assert "pixel_encoder.features.0.0.weight" in state  # the mobile preset's MobileNetV2


def test_the_real_stage_needs_its_folder(capsys, tmp_path: Path) -> None:
    argv = ["stage=real", "stage.iterations=1", "logger=none", f"output_dir={tmp_path / 'o'}"]
    assert train_cli.main([*argv, "data.real_root=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stage=real trains on real cut-outs: give data.real_root=DIR" in err
    assert "\n" not in err
    missing = tmp_path / "nowhere"
    assert train_cli.main([*argv, f"data.real_root={missing}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"data.real_root={missing} is not a folder: make it with" in err
    assert "\n" not in err and not (tmp_path / "o").exists()

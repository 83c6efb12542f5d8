"""The web demo (deva.cli.app, deva.app): served headless and driven through gradio_client."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.io.masks import read_mask_png
from deva.io.video import write_mp4
from tests.helpers import mp4_info

H, W, T, FPS = 48, 64, 5, 12
TIMEOUT_S = 240.0

pytest.importorskip("transformers")  # the tiny segmenters
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Every network address the process tries to reach while the demo is served (audit hook).
CONTACTED: list[str] = []
_WATCH = {"on": False}
LOCAL = ("127.", "::1", "localhost", "0.0.0.0", "::")


def _audit(event: str, args: tuple) -> None:
    if not _WATCH["on"] or event not in ("socket.connect", "socket.getaddrinfo"):
        return
    host = args[1][0] if event == "socket.connect" else args[0]
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and not host.startswith(LOCAL):
        CONTACTED.append(f"{event} {host}")


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return importlib.import_module("deva.cli.app")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A short generated mp4 clip."""
    config = SyntheticVideoConfig(
        num_frames=T, height=H, width=W, num_objects=2, num_stuff_regions=1
    )
    video = generate_video(config, seed=5)
    path = tmp_path_factory.mktemp("app_clip") / "clip.mp4"
    write_mp4(path, list(video.frames), fps=FPS)
    return path


@pytest.fixture(scope="module")
def backend(tool: ModuleType, tmp_path_factory):
    """The demo back end with tiny random segmenters and the embedded checkpoint."""
    work = tmp_path_factory.mktemp("app_work")
    app, _ = tool.build(
        ["demo=tiny", "segmenters=[sam,grounded_sam,owlv2_sam,sam3]", "size=-1", "keep_runs=3"],
        work,
    )
    return app


@pytest.fixture(scope="module")
def served(backend) -> Iterator[str]:
    """The page served on 127.0.0.1 (free port) in this process; closed afterwards."""
    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    from deva.app import build_demo, launch_demo

    _WATCH["on"] = True
    demo = build_demo(backend)
    url = launch_demo(
        demo, host="127.0.0.1", port=0, block=False, allowed_paths=[backend.settings.workdir]
    )
    try:
        yield url
    finally:
        demo.close()
        _WATCH["on"] = False


def client(url: str, downloads: Path):
    """A gradio_client for ``url`` (no analytics).

    Its constructor builds Hugging Face request headers, for which ``huggingface_hub`` may
    look up a registry on the Hub once (best effort, short timeout): that is the test's
    client, not the demo, so it is not watched.
    """
    from gradio_client import Client

    watching, _WATCH["on"] = _WATCH["on"], False
    try:
        return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)
    finally:
        _WATCH["on"] = watching


def predict(api, *args, progress: list | None = None):
    """Call the ``/track`` endpoint, bounded by a timeout; collects the progress updates."""
    job = api.submit(*args, api_name="/track")
    result = job.result(timeout=TIMEOUT_S)
    if progress is not None:  # every status update the client received, in order
        updates = job.communicator.updates
        while not updates.empty():
            progress.extend(getattr(updates.get_nowait(), "progress_data", None) or [])
    return result


def check_zip(archive: Path, folder: Path) -> dict:
    """The zip holds one PNG + JSON per frame that agree, and an RLE file decoding to them."""
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
        names = set(zf.namelist())
        frames = sorted(n[len("masks/") : -4] for n in names if n.endswith(".png"))
        assert frames == [f"{t:05d}" for t in range(T)]
        assert {f"masks/{f}.json" for f in frames} <= names
        assert {"coco_rle.json", "summary.json"} <= names
        rle = json.loads(zf.read("coco_rle.json"))
        summary = json.loads(zf.read("summary.json"))
        by_id = {a["id"]: a for a in rle["annotations"]}
        assert rle["videos"][0]["file_names"] == frames
        seen: set[int] = set()
        for t, frame in enumerate(frames):
            ids = read_mask_png(folder / "masks" / f"{frame}.png")
            assert ids.shape == (H, W)
            infos = json.loads(zf.read(f"masks/{frame}.json"))
            present = set(np.unique(ids).tolist()) - {0}
            assert {i["id"] for i in infos} == present
            for info in infos:
                obj = ids == info["id"]
                assert info["area"] == int(obj.sum())
                decoded = mask_utils.decode(by_id[info["id"]]["segmentations"][t]).astype(bool)
                assert np.array_equal(decoded, obj)
            for object_id, annotation in by_id.items():
                if object_id not in present:
                    assert annotation["segmentations"][t] is None
            seen |= present
    assert seen == set(by_id) and seen, "the tiny demo should track at least one object"
    assert summary["frames"] == T
    assert {o["id"] for o in summary["objects"]} == seen
    return summary


def test_import_deva_does_not_load_gradio() -> None:
    code = (
        "import sys, deva, deva.app, deva.segmenters, deva.pipelines.video_tracking; "
        "assert 'gradio' not in sys.modules, 'gradio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=os.environ.copy())


def test_requests_are_checked(backend, clip: Path) -> None:
    from deva.app import DemoInputError

    with pytest.raises(DemoInputError, match="upload a video"):
        backend.run_tracking(None, "sam")
    with pytest.raises(DemoInputError, match="needs a prompt"):
        backend.run_tracking(clip, "grounded_sam", "  ")
    with pytest.raises(ValueError, match="names no objects"):
        backend.run_tracking(clip, "grounded_sam", " . . ")
    with pytest.raises(DemoInputError, match="not offered"):
        backend.run_tracking(clip, "mask2former")
    with pytest.raises(DemoInputError, match="unknown tracking mode"):
        backend.run_tracking(clip, "sam", mode="sideways")
    # the prompt is ignored (not required) by automatic segmentation
    path, prompt, _ = backend.check_request(clip, "sam", "a dog", "online")
    assert path == clip and prompt is None


def test_page_warns_about_random_models(backend) -> None:
    notes = " ".join(backend.notices())
    assert "RANDOM" in notes and "deva-mobile-real.pth" in notes
    assert backend.settings.model_weights.endswith("deva-mobile-real.pth")


def test_track_through_gradio_client(served: str, clip: Path, tmp_path: Path, backend) -> None:
    from gradio_client import handle_file

    api = client(served, tmp_path / "downloads")
    progress: list = []
    overlay, archive, report = predict(
        api, handle_file(str(clip)), "sam", "", "online", 5, -1, progress=progress
    )
    # The page shows the stages and a per-frame bar (gr.Progress following track_video's
    # tqdm). Gradio sends the latest state every 10 ms, so updates in between may be skipped.
    stages = [
        "loading Automatic: SAM (segment everything)",
        "loading the propagation model",
        "tracking",
        "packing the masks",
    ]
    seen = [u.desc for u in progress if u.desc in stages]
    assert seen == sorted(seen, key=stages.index) and "tracking" in seen
    frames = [u.index for u in progress if u.unit == "frame" and u.length == T]
    # tqdm counts frames done, 0..T; the last state (T) arrives only when no later update
    # replaces it within gradio's 10 ms, so it may or may not be seen.
    assert frames and frames == sorted(set(frames)) and set(frames) <= set(range(T + 1))
    overlay_path = Path(overlay["video"] if isinstance(overlay, dict) else overlay)
    count, rate, size = mp4_info(overlay_path)
    assert (count, size) == (T, (H, W))
    assert rate == pytest.approx(FPS, rel=1e-3)
    summary = check_zip(Path(archive), tmp_path / "zip")
    assert summary["mode"] == "online"
    assert summary["settings"]["segmenter"]["name"] == "sam"
    assert f"{T} frames" in report and "RANDOM" in report


@pytest.mark.parametrize("segmenter", ["grounded_sam", "owlv2_sam", "sam3"])
def test_text_prompt_through_gradio_client(
    served: str, clip: Path, tmp_path: Path, segmenter: str
) -> None:
    from gradio_client import handle_file

    api = client(served, tmp_path / "downloads")
    _, archive, report = predict(
        api, handle_file(str(clip)), segmenter, "cat. dog.", "semionline", 2, -1
    )
    summary = check_zip(Path(archive), tmp_path / "zip")
    assert summary["settings"]["prompt"] == "cat. dog."
    assert summary["mode"] == "semionline" and summary["settings"]["detect_every"] == 2
    labels = {o["label"] for o in summary["objects"]}
    assert labels <= {"cat", "dog"}
    assert "cat. dog." in report


def test_bad_request_is_a_clear_error(served: str, clip: Path, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    api = client(served, tmp_path / "downloads")
    with pytest.raises(AppError, match="needs a prompt"):
        predict(api, handle_file(str(clip)), "grounded_sam", "", "online", 5, -1)


def test_served_demo_stays_offline(served: str) -> None:
    """No analytics, version check or any other address than the local server."""
    assert served.startswith("http://127.0.0.1:")
    assert CONTACTED == []


def test_real_model_options(tool: ModuleType, tmp_path: Path, clip: Path) -> None:
    """``segmenter.*`` sets the selected segmenter (as in track.py), the others keep their
    config files; nothing loads before a request, and a missing model is a clear error."""
    missing = tmp_path / "no_such_model"
    app, _ = tool.build(
        [
            "segmenter=grounded_sam",
            f"segmenter.model={missing}",
            "segmenter.box_threshold=0.3",
            "segmenters=[sam,grounded_sam]",
            "offline_models=true",
        ],
        tmp_path / "work",
    )
    s = app.settings
    assert list(s.segmenters) == ["sam", "grounded_sam"] and s.default_segmenter == "grounded_sam"
    assert s.segmenters["grounded_sam"]["model"] == str(missing)
    assert s.segmenters["grounded_sam"]["box_threshold"] == 0.3
    assert s.segmenters["sam"]["model"] == "facebook/sam-vit-base"
    assert s.model_preset == "published" and s.model_weights is None
    assert not s.random_segmenters and s.local_files_only is True
    assert any("RANDOM propagation" in n for n in app.notices())
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        app.run_tracking(clip, "grounded_sam", "dog.")
    assert not (tmp_path / "work" / "runs").exists()  # failed before any output


def test_tool_rejects_bad_options(tool: ModuleType, capsys) -> None:
    assert tool.main(["segmenter=yolo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: segmenter 'yolo' is not available") and "sam" in err
    assert tool.main(["demo=huge"]) == 2
    assert "demo must be one of" in capsys.readouterr().err


def _chromium() -> str | None:
    """Debian's chromium (or $DEVA_CHROMIUM); Playwright's own browsers are not used."""
    for candidate in (os.environ.get("DEVA_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium executable")
def test_in_a_real_browser(served: str, tmp_path: Path) -> None:
    """Upload, pick the text prompt, run and wait for the result in headless chromium.

    The screenshot goes to $DEVA_APP_SCREENSHOT (default: the test's temporary folder).
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    config = SyntheticVideoConfig(num_frames=8, height=120, width=160, num_objects=3)
    video = generate_video(config, seed=11)
    upload = tmp_path / "street.mp4"
    write_mp4(upload, list(video.frames), fps=FPS)
    shot = Path(os.environ.get("DEVA_APP_SCREENSHOT") or tmp_path / "app_screenshot.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(served)
            page.locator("#deva-run").wait_for()
            assert "RANDOM" in page.locator("#deva-notices").inner_text()
            page.locator("#deva-input input[type=file]").set_input_files(str(upload))
            page.locator("#deva-input video").wait_for()
            page.locator("#deva-segmenter input").click()
            page.get_by_text("Text prompt: Grounding-DINO + SAM").click()
            prompt = page.locator("#deva-prompt textarea")
            prompt.wait_for()
            prompt.fill("cat. dog.")
            page.locator("#deva-mode").get_by_text("semi-online", exact=False).click()
            page.locator("#deva-run").click()
            report = page.locator("#deva-report")
            report.get_by_text("Done", exact=False).wait_for(timeout=TIMEOUT_S * 1000)
            text = report.inner_text()
            player = page.locator("#deva-overlay video")
            player.wait_for()
            # show the last overlay frame (the objects of a random model may start late)
            player.evaluate(
                """v => new Promise(done => {
                    const seek = () => { v.onseeked = () => done(); v.currentTime = v.duration; };
                    if (v.readyState >= 1) { seek(); } else { v.onloadedmetadata = seek; }
                })"""
            )
            page.locator("#deva-zip").get_by_text(".zip", exact=False).first.wait_for()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert "8 frames" in text and "cat. dog." in text
    assert shot.stat().st_size > 10_000

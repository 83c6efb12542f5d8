"""The benchmark suite: JSON structure and the mask checks (never timing thresholds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deva.bench.common import SUITES, MaskComparison, _compile_variants, parse_options
from deva.bench.report import format_table
from deva.bench.run import run_suites
from deva.config import ConfigError


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cfg = parse_options(["suite=all", "presets=[tiny]", "quick=true", f"out={out}"])
    returned = run_suites(cfg, progress=lambda _: None)
    written = json.loads(out.read_text())
    assert written["rows"] == json.loads(json.dumps(returned["rows"]))
    return written


def test_every_suite_reports(result: dict) -> None:
    suites = {row["suite"] for row in result["rows"]}
    assert suites == set(SUITES)
    assert {"device", "threads", "torch", "load_average_at_start"} <= set(result["setup"])
    for row in result["rows"]:
        if row["suite"] in ("propagation", "tracker"):
            assert row["fps"] > 0 and row["frames"] > 0 and row["preset"] == "tiny"
    propagation = [r for r in result["rows"] if r["suite"] == "propagation"]
    variants = {r["variant"] for r in propagation}
    assert {"fp32-reference", "fp32", "fp32-channels-last"} <= variants
    for row in propagation:  # each frame's time split into the network's parts, each its own
        parts = row["ms_by_part"]
        assert {"encode_image", "project_key", "segment", "memory_read", "other"} <= set(parts)
        assert all(parts[k] > 0 for k in ("encode_image", "segment", "memory_read"))
        assert sum(parts.values()) == pytest.approx(row["ms_per_frame"])
        assert parts["other"] >= 0
    data = [r for r in result["rows"] if r["suite"] == "data"]
    assert {(r["source"], r["workers"]) for r in data} == {
        (source, w) for source in ("static", "video", "shards") for w in (0, 1)
    } | {("video folders + training (tiny)", 1)}
    assert all(r["samples_per_s"] > 0 and r["crop"] == "48x48" for r in data)
    fed = next(r for r in data if "training" in r["source"])
    assert 0 <= fed["data_wait_fraction"] <= 1 and fed["step_s"] > 0
    assert {r["clip_frames"] for r in data} == {3, 8}  # the static and video stages' clips
    training = next(r for r in result["rows"] if r["suite"] == "training")
    assert training["preset"] == "tiny" and training["samples_per_s"] > 0
    rss = [r for r in result["rows"] if r.get("measure") == "peak_rss"]
    assert {r["variant"] for r in rss} >= {"fp32-reference", "fp32"}
    assert {r["mode"] for r in rss} == {"vos", "semionline", "online"}
    assert all(r["peak_rss_mib"] >= r["rss_before_mib"] > 0 for r in rss)
    by_length = [r for r in result["rows"] if r.get("measure") == "rss_by_length"]
    assert {(r["mode"], r["frames"]) for r in by_length} == {
        (mode, n) for mode in ("online", "semionline", "offline") for n in (4, 12)
    }
    assert all(r["peak_rss_mib"] >= r["rss_before_mib"] > 0 for r in by_length)
    assert Path(by_length[0]["plot"]).is_file()
    memory = next(r for r in result["rows"] if r["suite"] == "memory" and "measure" not in r)
    trace = result["memory_trace"]
    assert (
        len(trace["frame"]) == len(trace["rss_mib"]) == len(trace["elements"]) == memory["frames"]
    )
    assert all(e > 0 for e in trace["elements"])
    assert Path(memory["plot"]).is_file()
    assert "| propagation |" in format_table(result)


def test_mask_checks_compare_every_timed_variant(result: dict) -> None:
    checked = {(c["suite"], c["variant"]) for c in result["checks"]}
    timed = {
        (r["suite"], r["variant"])
        for r in result["rows"]
        if r["suite"] in ("propagation", "tracker") and r["variant"] != "fp32-reference"
    }
    assert checked == timed
    for c in result["checks"]:
        assert 0 <= c["pixels_differ"] <= c["pixels"]
        assert 0.0 <= c["mean_object_iou"] <= 1.0
        assert c["passed"] in (True, False, None)
    # Batched alignment reproduces the previous alignment exactly.
    batched = next(c for c in result["checks"] if c["variant"] == "fp32-reference-batched")
    assert batched["kind"] == "identical" and batched["pixels_differ"] == 0 and batched["passed"]


def test_comparison_rules() -> None:
    ref = torch.zeros(10, 10, dtype=torch.long)
    ref[:5] = 1
    other = ref.clone()
    other[0, 0] = 0
    sure = torch.ones(10, 10, dtype=torch.bool)
    fp32 = MaskComparison("x", "ref", "fp32")
    fp32.add(other, ref, sure)
    assert fp32.result()["pixels_differ"] == 1 and fp32.result()["passed"] is False
    amp = MaskComparison("x", "ref", "reduced")
    amp.add(other, ref, sure)
    assert amp.result()["mean_object_iou"] == pytest.approx(49 / 50)
    assert amp.result()["passed"] is False
    tie = MaskComparison("x", "ref", "fp32")
    tie.add(other, ref, torch.zeros(10, 10, dtype=torch.bool))
    assert tie.result()["passed"] is None  # no decisive pixel: inconclusive


def test_options() -> None:
    cfg = parse_options(["tasks=[consensus]", "quick=true", "frames=7"])
    assert list(cfg.suite) == ["consensus"] and cfg.frames == 7 and cfg.size == 64
    assert list(parse_options(["suite=all"]).suite) == list(SUITES)
    with pytest.raises(ConfigError, match="suite"):
        parse_options(["suite=speed"])
    with pytest.raises(ConfigError, match="unknown options"):
        parse_options(["frame=3"])
    with pytest.raises(ConfigError, match="amp"):
        parse_options(["amp=int8"])
    assert list(parse_options(["rss_modes=vos"]).rss_modes) == ["vos"]
    with pytest.raises(ConfigError, match="rss_modes"):
        parse_options(["rss_modes=[batch]"])
    assert list(parse_options(["rss_lengths=7"]).rss_lengths) == [7]
    with pytest.raises(ConfigError, match="rss_lengths"):
        parse_options(["rss_lengths=[10,-1]"])
    # torch.compile variants: by default on a GPU only; forced either way.
    auto = parse_options([])
    assert not _compile_variants(auto, torch.device("cpu"))
    assert _compile_variants(auto, torch.device("cuda"))
    assert _compile_variants(parse_options(["compile=true"]), torch.device("cpu"))
    assert not _compile_variants(parse_options(["compile=false"]), torch.device("cuda"))
    with pytest.raises(ConfigError, match="compile"):
        parse_options(["compile=maybe"])


def test_backends_suite_times_every_backend(tmp_path: Path) -> None:
    """SAM-family backends from local folders are timed beside ours; EdgeTAM without a folder
    is reported as skipped (its published encoder needs timm), not timed on another design."""
    pytest.importorskip("transformers")
    from deva.segmenters.tiny import save_tiny_sam2_video

    folder = save_tiny_sam2_video(tmp_path / "sam2")
    cfg = parse_options(
        ["suite=backends", "quick=true", "backends=[deva,hold,sam2,edgetam]",
         f"+backend_models.sam2={folder}"]
    )  # fmt: skip
    rows = {row["backend"]: row for row in run_suites(cfg, progress=lambda _: None)["rows"]}
    assert set(rows) == {"deva", "hold", "sam2", "edgetam"}
    for name in ("deva", "hold", "sam2"):
        assert rows[name]["fps"] > 0 and rows[name]["frame"] == "64x112"
    assert rows["sam2"]["model"] == str(folder) and rows["sam2"]["parameters"] > 1e6
    assert "fps" not in rows["edgetam"] and "timm" in rows["edgetam"]["model"]
    assert "| backends | sam2 |" in format_table({"rows": list(rows.values()), "checks": []})
    with pytest.raises(ConfigError, match="backends must be among"):
        parse_options(["backends=[sam9]"])

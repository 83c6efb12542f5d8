"""Owned output folders: a run records what it writes; overwrite deletes only that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deva.io.outputs import (
    MANIFEST_FILE,
    RUN_FILE,
    OutputError,
    OutputFolder,
    check_folder,
    foreign_files,
    read_run,
)
from tests.helpers import EMBEDDED, load_tool


def _run_into(root: Path, **kwargs) -> OutputFolder:
    out = OutputFolder(root, tool="test", **kwargs)
    out.write_json("a/result.json", {"x": 1})
    out.write_run({"state": "done"}, final=True)
    return out


def test_manifest_lists_what_was_written_before_it_is_written(tmp_path: Path) -> None:
    out = OutputFolder(tmp_path / "o", tool="test")
    target = out.path("masks/00000.png")
    assert (tmp_path / "o" / MANIFEST_FILE).read_text().splitlines() == ["masks/00000.png"]
    assert not target.exists() and target.parent.is_dir()
    out.write_json("summary.json", {"frames": 1})
    out.write_run({"state": "done"}, final=True)
    run = read_run(tmp_path / "o")
    assert run["tool"] == "test" and run["files"] == ["masks/00000.png", "summary.json"]


def test_overwrite_replaces_only_a_previous_runs_files(tmp_path: Path) -> None:
    root = tmp_path / "o"
    _run_into(root)
    with pytest.raises(OutputError, match="overwrite=true"):
        OutputFolder(root, tool="test")
    # a file no run wrote: refused, nothing deleted
    (root / "a" / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="no deva run wrote"):
        OutputFolder(root, tool="test", overwrite=True)
    assert (root / "a" / "mine.txt").read_text() == "keep me"
    assert (root / "a" / "result.json").is_file() and (root / RUN_FILE).is_file()
    assert foreign_files(root) == [root / "a" / "mine.txt"]
    (root / "a" / "mine.txt").unlink()
    fresh = OutputFolder(root, tool="test", overwrite=True)
    assert not (root / "a" / "result.json").exists() and fresh.files == []


def test_inputs_inside_the_output_and_contradictions_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "o"
    with pytest.raises(OutputError, match="inside the output folder"):
        check_folder(root, inputs=[root / "frames"])
    with pytest.raises(OutputError, match="contradict"):
        check_folder(root, overwrite=True, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_folder(tmp_path / "file")


def test_resume_keeps_the_files_owned(tmp_path: Path) -> None:
    root = tmp_path / "o"
    _run_into(root)
    again = OutputFolder(root, tool="test", resume=True)
    assert again.owns("a/result.json") and (root / "a" / "result.json").is_file()


def test_writing_tools_never_delete_files_they_did_not_write(tmp_path: Path, capsys) -> None:
    """make_synthetic and evaluate into a folder holding a user's file, with overwrite=true:
    one line, exit 2, the file intact; their own earlier output is replaced."""
    make_synthetic, evaluate = load_tool("make_synthetic"), load_tool("evaluate")
    data = tmp_path / "data"
    small = ["num_videos=1", "num_frames=3", "height=32", "width=48"]
    assert make_synthetic.main([f"output={data}", *small]) == 0
    assert make_synthetic.main([f"output={data}", *small, "overwrite=true"]) == 0
    (data / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert make_synthetic.main([f"output={data}", *small, "overwrite=true"]) == 2
    assert "no deva run wrote" in capsys.readouterr().err
    assert (data / "notes.txt").read_text() == "mine"

    out = tmp_path / "eval"
    args = [
        "benchmark=detections",
        f"data.images={data / 'JPEGImages'}",
        f"data.detections={data / 'Detections'}",
        f"output={out}",
        f"model.weights={EMBEDDED}",
        "size=-1",
    ]
    assert evaluate.main(args) == 0
    written = json.loads((out / RUN_FILE).read_text())["files"]
    assert written and all((out / name).is_file() for name in written)
    (out / "mine.png").write_bytes(b"x")
    capsys.readouterr()
    assert evaluate.main([*args, "overwrite=true"]) == 2
    err = capsys.readouterr().err
    assert "no deva run wrote" in err and len(err.strip().splitlines()) == 1
    assert (out / "mine.png").read_bytes() == b"x"
    assert all((out / name).is_file() for name in written)
    # inputs inside the output folder are refused
    inside = [*args[:3], f"output={data}", *args[4:], "overwrite=true"]
    assert evaluate.main(inside) == 2
    assert "inside the output folder" in capsys.readouterr().err

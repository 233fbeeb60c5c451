"""petloc as a library: its wheel, built from the checkout and installed without ``-e`` into a fresh
virtualenv that reuses this environment's dependencies, runs from a folder outside the checkout, with
a user's own config joined through Hydra's search path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import GOOD_BOX, image_bytes, voc_xml

# what the wheel is built from (pyproject.toml and setup.py say how)
SOURCES = ("pyproject.toml", "setup.py", "README.md", "petloc", "conf")
# run by the installed interpreter: where petloc and its configs are, then the Hydra apps' --help
LOCATE_AND_HELP = """
import sys
import petloc, timm
from petloc.cli import evaluate, export, predict
print(petloc.__file__)
print(petloc.CONFIG_DIR)
for name, app in (("eval", evaluate), ("predict", predict), ("export", export)):
    sys.argv = [f"petloc-{name}", "--help"]
    try:
        app.main()
    except SystemExit as done:  # how Hydra ends after --help
        assert not done.code, done.code
"""


def run(command: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    """Run ``command``; its output, and a failure with the output's end when it exits non-zero."""
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command[0]} exited {result.returncode}:\n{output[-4000:]}"
    return output


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout (so that no build folder lands in the checkout)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    dist = tmp_path / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    run([*pip_wheel, "--quiet", "-w", dist, source], cwd=tmp_path, env=dict(os.environ))
    (wheel,) = dist.glob("petloc-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A virtualenv whose own site-packages comes first, then this environment's (a .pth file):
    petloc's dependencies are reused, petloc itself is whatever gets installed into the new one."""
    venv.EnvBuilder(with_pip=False).create(path)
    (site_packages,) = path.glob("lib/python*/site-packages")
    reused = [p for p in sys.path if Path(p).name == "site-packages" and Path(p).is_dir()]
    (site_packages / "reuse-dependencies.pth").write_text("".join(f"{p}\n" for p in reused))
    return path / "bin"


def crafted_voc(root: Path, n: int = 3) -> Path:
    """``n`` JPEGs, each with its PASCAL VOC XML beside it."""
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"pet_{i}.jpg").write_bytes(image_bytes("JPEG", seed=i))
        (root / f"pet_{i}.xml").write_text(voc_xml((80, 60), [GOOD_BOX]))
    return root


@pytest.mark.slow
def test_the_wheel_runs_every_command_outside_the_checkout(tmp_path: Path, cache_dir: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (*(REPO / "petloc").rglob("*.py"), *(REPO / "conf").rglob("*.yaml")):
        relative = path.relative_to(REPO).as_posix()
        packaged = "petloc/" + relative if relative.startswith("conf/") else relative
        assert packaged in names, f"{relative} is not in the wheel"

    bin_dir = fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # --ignore-installed: the petloc of this environment (visible through the .pth) stays untouched
    pip_install = [bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index"]
    run([*pip_install, "--ignore-installed", "--quiet", wheel], cwd=tmp_path, env=env)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # the installed package and its config tree, timm beside it; the Hydra apps find their configs
    # (their --help composes them; one process for the three, which share their start-up imports)
    located = run([bin_dir / "python", "-c", LOCATE_AND_HELP], cwd=outside, env=env).splitlines()
    installed = (tmp_path / "venv").resolve()
    assert all(Path(p).is_relative_to(installed) for p in located[:2]), located[:2]
    for app in ("petloc-eval", "petloc-predict", "petloc-export"):
        assert f"{app} is powered by Hydra." in located
        assert (bin_dir / app).is_file()

    # a user's config beside petloc's: a data option of their own, extending petloc's synthetic set
    own = outside / "my_conf" / "data"
    own.mkdir(parents=True)
    (own / "small.yaml").write_text("defaults:\n  - synthetic_pets\nsynthetic:\n  n: 48\n")
    trained = run(
        [
            bin_dir / "petloc-train",
            f"hydra.searchpath=[file://{own.parent}]",
            "data=small",
            "debug=fast",
            f"paths.cache_dir={cache_dir}",
        ],
        cwd=outside,
        env=env,
    )
    assert ": 48 images," in trained
    assert list((outside / "outputs" / "train").glob("*/.hydra/config.yaml"))

    checked = run([bin_dir / "petloc-data", "check", crafted_voc(outside / "my_voc")], cwd=outside, env=env)
    assert "format: voc (detected)" in checked and "3 usable boxed images" in checked
    assert "usage: petloc-compare" in run([bin_dir / "petloc-compare", "--help"], cwd=outside, env=env)

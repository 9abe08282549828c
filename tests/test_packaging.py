"""What the source distribution holds: the project's own top-level folders and files,
never a copy of them found deeper (a local ``.venv3.10``'s site-packages, a build tree)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SHIPPED = {
    "CHANGELOG.md",
    "LICENSE",
    "PKG-INFO",
    "README.md",
    "docs",
    "examples",
    "pyproject.toml",
    "tests",
    "tyqw",
}


def test_the_sdist_holds_only_the_top_level_folders(tmp_path: Path) -> None:
    """Folders named tyqw, tests or examples below the root (a local venv) stay out."""
    sdist = pytest.importorskip("hatchling.builders.sdist")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"):
        shutil.copy(ROOT / name, project / name)
    (project / "tyqw").mkdir()
    shutil.copy(ROOT / "tyqw" / "_version.py", project / "tyqw" / "_version.py")
    for name in ("tyqw/__init__.py", "tests/test_x.py", "examples/x.py", "docs/index.md"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("\n")
    site = project / ".venv3.10" / "lib" / "python3.10" / "site-packages"
    for leak in ("tyqw/__init__.py", "tests/conftest.py", "examples/x.py", "README.md"):
        (site / leak).parent.mkdir(parents=True, exist_ok=True)
        (site / leak).write_text("leaked\n")

    builder = sdist.SdistBuilder(str(project))
    [built] = list(builder.build(directory=str(tmp_path / "dist"), versions=["standard"]))
    with tarfile.open(built) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert not [name for name in names if ".venv" in name]
    assert {name.split("/")[0] for name in names} == SHIPPED

"""Packaging: building Bridge's metadata prints no deprecation from the build backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_building_the_metadata_prints_no_deprecation(tmp_path: Path) -> None:
    # The metadata step of `make setup` (pip's isolated build, setuptools
    # from PyPI), on a copy: nothing is written into the source tree.
    project = tmp_path / "project"
    (project / "bridge").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copy(ROOT / "bridge" / "__init__.py", project / "bridge" / "__init__.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "-v", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Would install bridge-" in output
    assert "deprecat" not in output.lower(), output
    assert "project.license" not in output, output

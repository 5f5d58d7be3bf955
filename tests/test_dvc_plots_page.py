"""vendor/vega/: the page `dvc plots show` fills is built from the charting libraries beside it (npm's own
files), and the repository's DVC config points at it. tests/e2e/test_dvc_tools.py opens it in a browser."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO / "vendor" / "vega"


def test_the_page_is_built_from_the_vendored_libraries_as_npm_ships_them():
    proc = subprocess.run([sys.executable, str(VENDOR / "build.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_plain_dvc_plots_show_uses_the_page():
    dvc = Path(sys.executable).with_name("dvc")
    configured = subprocess.run([str(dvc), "config", "plots.html_template"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    assert (REPO / ".dvc" / configured).resolve() == VENDOR / "dvc_plots.html"  # DVC resolves it from .dvc/


def test_the_readme_names_each_version_and_each_licence_is_there():
    libraries = runpy.run_path(str(VENDOR / "build.py"))["LIBRARIES"]
    readme = (VENDOR / "README.md").read_text()
    for name, version, filename, sha256 in libraries:
        assert f"{name}@{version}" in readme and sha256 in readme, name
        assert "BSD-3-Clause" in readme and (VENDOR / f"LICENSE.{name}").read_text().startswith("Copyright (c) 2015")

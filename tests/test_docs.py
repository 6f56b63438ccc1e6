"""The documentation site builds in strict mode: a broken link or reference fails the run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def test_the_documentation_builds_without_a_warning(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("TGSESSION_REQUIRE_DOCS") == "1":  # .ci/run: never skipped
            pytest.fail("MkDocs is not installed: pip install -e '.[test]'")
        pytest.skip("MkDocs is not installed: pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reference" / "index.html").exists()

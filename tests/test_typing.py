"""Typing: mypy infers a session's type from with_session(initial=...)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, child_env


def test_mypy_infers_session_types_from_initial(tmp_path: Path) -> None:
    cases = Path(__file__).with_name("typing") / "inference.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(cases)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout

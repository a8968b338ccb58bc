"""The AI SDK's own clients, from npm, run in Node against a running Trickle.

Each folder under tests/js pins its packages in package-lock.json; `node_client`
installs them (`npm ci`) when node_modules does not hold exactly those versions,
then runs one of its scripts, which prints one JSON result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent / "js"


def _installed(folder: Path, names: tuple[str, ...]) -> bool:
    """node_modules holds what package-lock.json pins (a stale or missing install is reinstalled)."""
    lock = json.loads((folder / "package-lock.json").read_text())
    for name in names:
        try:
            have = json.loads((folder / "node_modules" / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return False
        if have != lock["packages"][f"node_modules/{name}"]["version"]:
            return False
    return True


def node_client(folder: Path, script: str, names: tuple[str, ...]) -> Callable[..., dict]:
    """A runner of `folder/script` (installing the pinned packages first if needed: a failure fails):
    `run(mode, api, arg, **env)` → the script's JSON result."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the AI SDK tests (Debian: apt-get install nodejs npm)")
    if not _installed(folder, names):
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0 or not _installed(folder, names):
            pytest.fail(f"npm ci in {folder} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def run(mode: str, api: str, arg, **env: str) -> dict:
        result = subprocess.run(
            [node, str(folder / script), mode, api, json.dumps(arg)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, f"node exited with {result.returncode}:\n{result.stderr}"
        return json.loads(result.stdout)

    return run

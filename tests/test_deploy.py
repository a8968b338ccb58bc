"""One-step deploys: the Procfile's own commands start the app, stream, and migrate idempotently."""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.conftest import ROOT, free_port
from tests.sse import read_api_stream


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def platform_env(tmp: str, **extra: str) -> dict[str, str]:
    """The environment a platform gives the dyno: PORT, DATABASE_URL, the venv's tools on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        "DATABASE_URL": f"sqlite:///{tmp}/deploy.db",
        **extra,
    }


def test_procfile_web_line_starts_the_app_and_streams(upstream):
    command = procfile()["web"].strip()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = platform_env(
            tmp, PORT=str(port), OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="k", CHAT_MODEL="fake-model"
        )
        process = subprocess.Popen(
            shlex.split(command), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                        break
                except requests.RequestException:  # not listening yet, or still booting
                    time.sleep(0.2)
            response = requests.post(
                f"http://127.0.0.1:{port}/api/chat",
                stream=True,
                timeout=20,
                json={"messages": [{"role": "user", "content": "deployed?"}]},
            )
            text, raw = read_api_stream(response)
            assert text == "Echo: deployed?"
            assert raw[-1] == "[DONE]"
        finally:
            process.terminate()
            process.wait(20)


def test_release_command_is_idempotent():
    command = procfile()["release"].strip()
    with tempfile.TemporaryDirectory() as tmp:
        env = platform_env(tmp)
        first = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        second = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr
        assert "Database ready" in second.stdout


def test_app_json_generates_a_secret_key_and_describes_every_variable():
    manifest = json.loads((ROOT / "app.json").read_text())
    assert manifest["env"]["SECRET_KEY"]["generator"] == "secret"
    assert all(spec.get("description") for spec in manifest["env"].values())
    assert (ROOT / ".python-version").read_text().strip().startswith("3.")


def test_a_bad_setting_stops_the_app_with_the_variable_named():
    env = {**os.environ, "STREAM_FLUSH_MS": "soon"}
    result = subprocess.run(
        [sys.executable, "-c", "import app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "STREAM_FLUSH_MS" in result.stderr
    assert "Traceback" not in result.stderr

"""Settings as a table: one declaration per variable, one reader, and a bad value stops `make run`."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from trickle import pricing
from trickle.settings import SETTINGS, Settings, SettingsError, load_settings, read_setting

DERIVED = {"production"}  # worked out from several variables


def test_every_setting_is_declared_once_and_fills_its_own_field():
    names = [setting.name for setting in SETTINGS]
    attributes = [setting.attribute for setting in SETTINGS if setting.attribute]
    assert len(names) == len(set(names)) and len(attributes) == len(set(attributes))
    assert set(attributes) | DERIVED == {field.name for field in dataclasses.fields(Settings)}
    assert all(setting.help for setting in SETTINGS)
    load_settings({})  # every default passes its own check


def test_one_reader_for_numbers_whole_numbers_and_their_bounds():
    assert read_setting({"DB_POOL_SIZE": " 3 "}, "DB_POOL_SIZE") == 3
    assert read_setting({}, "DB_POOL_SIZE") == 5
    assert read_setting({"STREAM_FLUSH_MS": "45"}, "STREAM_FLUSH_MS") == pytest.approx(0.045)
    for env, message in [
        ({"DB_POOL_SIZE": "2.5"}, "DB_POOL_SIZE must be a whole number, got '2.5'"),
        ({"DB_MAX_OVERFLOW": "-1"}, "DB_MAX_OVERFLOW must be at least 0, got '-1'"),
        ({"PORT": "70000"}, "PORT must be at most 65535, got '70000'"),
        ({"SSE_PING_S": "0"}, "SSE_PING_S must be at least 0.05, got '0'"),
    ]:
        name = next(iter(env))
        with pytest.raises(SettingsError, match=re.escape(message)):
            read_setting(env, name)


def test_log_level_is_accepted_in_any_case_and_checked():
    assert load_settings({"LOG_LEVEL": "info"}).log_level == "info"
    assert load_settings({"LOG_LEVEL": "WARNING"}).log_level == "warning"
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        load_settings({"LOG_LEVEL": "loud"})


def test_create_app_runs_with_a_lower_case_log_level():
    """Run apart from pytest, whose own log handlers would make logging.basicConfig a no-op."""
    tmp = tempfile.mkdtemp(prefix="trickle-settings-")
    env = {"LOG_LEVEL": "info", "CHAT_PROVIDER": "demo", "SECRET_KEY": "x", "DATABASE_URL": f"sqlite:///{tmp}/t.db"}
    code = f"from trickle import create_app; create_app({env!r}); print('started')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "started" in result.stdout, result.stderr


def test_secrets_stay_out_of_the_settings_repr():
    env = {"SECRET_KEY": "s3cret-key", "APP_PASSWORD": "pass-word", "OPENAI_API_KEY": "sk-abc123"}
    shown = repr(load_settings(env))
    assert not any(value in shown for value in env.values())
    assert "secret_key=…" in shown and "app_password=…" in shown


def test_prices_give_the_cost_of_an_answer():
    settings = load_settings({"MODEL_PRICES": "gpt-5.4-mini=0.25/2.00, llama3.2=0/0"})
    assert pricing.price_of(settings, "gpt-5.4-mini") == (0.25, 2.0)
    assert pricing.cost_of(settings, "gpt-5.4-mini", 1_000_000, 500_000) == pytest.approx(1.25)
    assert pricing.price_of(settings, "unpriced") is None and pricing.cost_of(settings, "unpriced", 9, 9) == 0.0


def test_nothing_else_reads_the_environment():
    """Only settings.py reads variables (PROMETHEUS_MULTIPROC_DIR is the process's own, not configuration)."""
    reads = re.compile(r"os\.environ\.get\(|os\.environ\[|os\.getenv\(|environ\.get\(")
    sources = [*sorted((ROOT / "trickle").glob("*.py")), ROOT / "app.py", ROOT / "gunicorn.conf.py"]
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sources
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line) and "PROMETHEUS_MULTIPROC_DIR" not in line
    ]
    assert offenders == []


def test_gunicorn_config_checks_settings_without_loading_the_app():
    """The master must not import Flask or the openai client before the workers' gevent monkey-patching."""
    code = "import json, runpy, sys; runpy.run_path('gunicorn.conf.py'); print(json.dumps(list(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert not loaded & {"trickle", "flask", "openai", "httpx", "sqlalchemy"}


# -- a wrong value stops the README's run command --------------------------------------------------


def make_run(tmp_path: Path, **env: str) -> tuple[int, str]:
    """`make run` in the repository, on this interpreter's packages (a stand-in venv that is already
    installed, so make never runs pip), killed after 60 s if it does not end by itself."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    (venv / ".installed").touch()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"VENV={venv}"],
        cwd=ROOT,
        env={**os.environ, "PORT": str(free_port()), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"make run was still running after 60 s:\n{output[-3000:]}")
    return process.returncode, output


@pytest.mark.parametrize(
    ("name", "value"), [("STREAM_FLUSH_MS", "abc"), ("LOG_LEVEL", "loud"), ("GRACEFUL_TIMEOUT", "soon")]
)
def test_a_bad_setting_stops_make_run_naming_it(tmp_path, name, value):
    returncode, output = make_run(tmp_path, **{name: value})
    assert returncode != 0
    assert f"trickle: configuration error: {name}" in output, output[-3000:]
    assert "Booting worker" not in output and "Traceback" not in output


# -- the documentation agrees with the table ---------------------------------------------------------

VARIABLE = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)(?:=[^`]*)?`")


def table_variables(markdown: str, heading: str) -> set[str]:
    """The variables named in the table rows of one section (`NAME` or `NAME=value` in backticks)."""
    section = markdown.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return {name for row in rows for name in VARIABLE.findall(row)}


def test_the_readme_tables_name_every_setting_and_nothing_else():
    readme = (ROOT / "README.md").read_text()
    documented = table_variables(readme, "## Settings") | table_variables(readme, "## Security")
    declared = {setting.name for setting in SETTINGS}
    assert documented - declared == set(), "named in the README but not declared in trickle/settings.py"
    assert declared - documented == set(), "declared in trickle/settings.py but missing from the README's tables"
    customizing = (ROOT / "docs" / "customizing.md").read_text()
    assert table_variables(customizing, "## Settings (words and behaviour)") - declared == set()


def test_app_json_names_only_settings_with_their_defaults():
    manifest = json.loads((ROOT / "app.json").read_text())
    declared = {setting.name: setting for setting in SETTINGS}
    assert set(manifest["env"]) - set(declared) == set()
    for name, spec in manifest["env"].items():
        default = declared[name].default
        default = default({}) if callable(default) else default
        if "value" in spec and default is not None:
            assert spec["value"] == default, name

"""What the bundled app relies on at run time, checked without building a bundle (that is
`make bundle && make bundle-smoke`, run by .ci/run): where the engine is found, where output goes
without a console, and the import wall the spec enforces."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2s_desktop import console, engine_client

ROOT = Path(__file__).resolve().parents[2]


def test_engine_found_next_to_the_frozen_gui(monkeypatch, tmp_path):
    monkeypatch.delenv("S2S_ENGINE_CMD", raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "Subject2Subject" / "s2s"))
    command = engine_client.engine_command()
    suffix = ".exe" if os.name == "nt" else ""
    assert command == [str(tmp_path / "Subject2Subject" / f"s2s-engine{suffix}"), "serve"]


def test_engine_from_source_when_not_frozen(monkeypatch):
    monkeypatch.delenv("S2S_ENGINE_CMD", raising=False)
    monkeypatch.delattr(sys, "frozen", raising=False)
    assert engine_client.engine_command() == [sys.executable, "-m", "engine", "serve"]


@pytest.fixture
def frozen_without_console(monkeypatch, tmp_path):
    """A frozen app whose stderr is not a terminal (double-clicked); restores the streams after."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setenv("S2S_HOME", str(tmp_path))
    monkeypatch.setattr(console, "_log_file", None)
    saved = sys.stdout, sys.stderr
    yield tmp_path / "logs" / console.LOG_NAME
    sys.stdout, sys.stderr = saved


def test_no_log_file_when_running_from_source(monkeypatch, tmp_path):
    monkeypatch.delattr(sys, "frozen", raising=False)
    monkeypatch.setenv("S2S_HOME", str(tmp_path))
    assert console.prepare(["s2s"]) is None
    assert not (tmp_path / "logs").exists()


def test_frozen_app_without_console_logs_to_a_file(frozen_without_console, capsys):
    path = console.prepare(["s2s"])
    assert path == frozen_without_console
    print("Traceback (most recent call last): boom", file=sys.stderr)
    print("a partial line without newline", file=sys.stderr, end="")
    text = path.read_text()
    assert "[app] start: s2s" in text
    assert "[app] Traceback (most recent call last): boom" in text
    assert "partial line" not in text  # written when its line ends
    # the original stream still gets everything (a redirected `s2s … 2> file` keeps working)
    assert "boom" in capsys.readouterr().err


def test_log_file_rolls_over_when_large(frozen_without_console):
    log = frozen_without_console
    log.parent.mkdir(parents=True)
    log.write_bytes(b"x" * (console.MAX_LOG_BYTES + 1))
    console.prepare(["s2s"])
    assert log.with_name(console.LOG_NAME + ".1").stat().st_size == console.MAX_LOG_BYTES + 1
    assert log.stat().st_size < 200


def test_missing_stdout_is_replaced(frozen_without_console):
    sys.stdout = None  # what a windowed Windows build has
    console.prepare(["s2s"])
    print("/tmp/shot.png")  # --screenshot prints the path
    assert "/tmp/shot.png" in frozen_without_console.read_text()


def test_import_report_shows_the_gui_never_loads_torch(tmp_path):
    """The same check `make bundle-smoke` runs on the frozen GUI, here on the source tree."""
    report = tmp_path / "imports.txt"
    code = ("from s2s_desktop import console; console.report_imports_at_exit(); "
            "from s2s_desktop.app import screenshot; screenshot(r'%s')" % (tmp_path / "shot.png"))
    env = dict(os.environ, S2S_REPORT_IMPORTS=str(report), S2S_HOME=str(tmp_path / "home"),
               QT_QPA_PLATFORM="offscreen")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT, timeout=120)
    loaded = set(report.read_text().split())
    assert {"PySide6", "s2s_desktop", "engine"} <= loaded
    assert not loaded & {"torch", "diffusers", "transformers", "peft", "accelerate", "safetensors"}


def _spec_list(name: str) -> list[str]:
    tree = ast.parse((ROOT / "packaging" / "s2s.spec").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not in s2s.spec")


def test_spec_keeps_every_engine_dependency_out_of_the_gui():
    """Each compute library the project depends on is in the GUI analysis's excludes."""
    excluded = set(_spec_list("COMPUTE_PACKAGES"))
    for dist in ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "torchmetrics",
                 "huggingface_hub"):
        assert dist in excluded


def test_project_hooks_are_loadable_python():
    hooks = sorted((ROOT / "packaging" / "hooks").glob("hook-*.py"))
    assert {h.name for h in hooks} >= {"hook-diffusers.py", "hook-peft.py", "hook-accelerate.py",
                                       "hook-safetensors.py", "hook-engine.server.py"}
    for hook in hooks:
        compile(hook.read_text(), str(hook), "exec")

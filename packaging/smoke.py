"""``make bundle-smoke``: run the built bundle headless, as a user's machine would, and check it.

    python packaging/smoke.py [--dist dist]

Every check runs the bundle's own executables in a fresh ``S2S_HOME`` with no Python, venv or repo
on their path, and offline (``HF_HUB_OFFLINE=1``). Exit 0 when all pass; the table says what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import ROOT, executables  # noqa: E402

sys.path.insert(0, str(ROOT))
from engine import protocol  # noqa: E402  (stdlib only: what a client speaks)

# Modules the frozen GUI must never load (DESIGN.md: the GUI starts without torch).
GUI_FORBIDDEN = {"torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "torchmetrics"}
PROMPT = "a red star on a blue background"


class SmokeFailure(Exception):
    pass


def bundle_env(home: Path) -> dict:
    """The user's environment, minus anything that could make the bundle lean on this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "S2S_"))}
    env.update(S2S_HOME=str(home), HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def run(cmd: list, env: dict, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SmokeFailure(f"exit {done.returncode}: {' '.join(map(str, cmd[1:]))}\n{done.stderr[-3000:]}")
    return done


def check_version(s2s: Path, env: dict, work: Path) -> str:
    out = run([s2s, "--version"], env, 60, work).stdout.strip()
    from s2s_desktop import __version__

    if out != f"s2s {__version__}":
        raise SmokeFailure(f"s2s --version printed {out!r}, expected 's2s {__version__}'")
    return out


def check_screenshot(s2s: Path, env: dict, work: Path) -> str:
    shot, report = work / "window.png", work / "gui-imports.txt"
    run([s2s, "--screenshot", shot], dict(env, S2S_REPORT_IMPORTS=str(report)), 120, work)
    data = shot.read_bytes() if shot.exists() else b""
    if not data.startswith(b"\x89PNG") or len(data) < 20_000:
        raise SmokeFailure(f"the screenshot {shot} is missing or blank ({len(data)} bytes)")
    loaded = set(report.read_text().split())
    if not loaded:
        raise SmokeFailure("the GUI wrote no import report (S2S_REPORT_IMPORTS)")
    if loaded & GUI_FORBIDDEN:
        raise SmokeFailure(f"the frozen GUI imported {sorted(loaded & GUI_FORBIDDEN)}")
    return f"{len(data) // 1024} KB PNG; GUI loaded {len(loaded)} top-level modules, none of {sorted(GUI_FORBIDDEN)[:3]}…"


def check_engine_hello(engine: Path, env: dict, work: Path) -> str:
    proc = subprocess.Popen([str(engine), "serve"], env=env, cwd=work, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.perf_counter()
        proc.stdin.write(protocol.encode(protocol.request(1, "hello", {"client": "bundle-smoke"})))
        proc.stdin.flush()
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - start
        proc.stdin.close()  # the engine exits on stdin EOF
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if not line:
        raise SmokeFailure(f"the engine answered nothing: {proc.stderr.read()[-3000:]}")
    message = json.loads(line)
    result = message.get("result") or {}
    if result.get("v") != protocol.PROTOCOL_VERSION or "generate" not in result.get("job_kinds", []):
        raise SmokeFailure(f"unexpected hello answer: {line.strip()}")
    if code != 0:
        raise SmokeFailure(f"the engine exited with {code} after stdin closed")
    return (f"protocol v{result['v']}, engine {result['engine']}, Python {result['python']}, "
            f"{len(result['job_kinds'])} job kinds, answered in {elapsed:.1f} s")


def check_generate_demo(s2s: Path, env: dict, work: Path) -> str:
    """Four seeds from the bundle: the toy evaluator must see a red star in most (the toy model gets
    the shape right in about 80 % of seeds), and the pixels must equal the source tree's."""
    args = ["generate", "--demo", "--prompt", PROMPT, "--steps", "25", "--batch", "4", "--json"]
    bundled = _images(run([s2s, *args, "--out", work / "generated"], env, 600, work).stdout)
    source = _images(run([sys.executable, "-m", "s2s_desktop.cli", *args, "--out", work / "from-source"],
                         dict(env, PYTHONPATH=str(ROOT)), 600, work).stdout)
    if len(bundled) != 4:
        raise SmokeFailure(f"s2s generate --demo --batch 4 wrote {len(bundled)} images")
    stars = sum(_shows_red_star(path) for path in bundled)
    if stars < 3:
        raise SmokeFailure(f"the toy evaluator sees {PROMPT!r} in {stars} of 4 bundled images")
    differing = [a.name for a, b in zip(bundled, source, strict=True) if _max_pixel_difference(a, b) > 0]
    if differing:
        raise SmokeFailure(f"the bundle's images differ from the source tree's: {differing}")
    return f"red star in {stars}/4 seeds (toy evaluator); pixels identical to the source tree's"


def _images(json_stdout: str) -> list[Path]:
    return [Path(item["path"]) for item in json.loads(json_stdout)["images"]]


def _shows_red_star(image: Path) -> bool:
    """What the shipped toy evaluator sees (from the checkout: the smoke test runs beside it)."""
    from PIL import Image

    from engine.toy.scoring import score_caption

    score = score_caption(Image.open(image).convert("RGB"), PROMPT)
    return bool(score["colour_ok"] and score["shape_ok"])


def _max_pixel_difference(a: Path, b: Path) -> int:
    import numpy as np
    from PIL import Image

    return int(np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int)).max())


def check_add_model_folder(s2s: Path, env: dict, work: Path) -> str:
    folder = ROOT / "resources" / "toy-world"  # a diffusers folder, as a user would pick one
    done = run([s2s, "models", "add", folder, "--name", "toy copy", "--json"], env, 300, work)
    listed = json.loads(run([s2s, "models", "list", "--json"], env, 60, work).stdout)
    if not any(row["name"] == "toy copy" for row in listed):
        raise SmokeFailure(f"the added folder is not listed: {done.stdout[-500:]}")
    return "a diffusers folder added and listed"


def check_train_demo(s2s: Path, env: dict, work: Path) -> str:
    run([s2s, "subjects", "add-demo"], env, 300, work)
    done = run([s2s, "train", "Dotty", "--demo", "--method", "lora", "--steps", "2", "--no-prior", "--json"],
               env, 600, work)
    summary = json.loads(done.stdout)
    exports = [Path(item["path"]) for item in summary.get("exports", [])]
    if not exports or not all(path.exists() for path in exports):
        raise SmokeFailure(f"the run exported nothing that exists: {done.stdout[-1000:]}")
    return f"run {summary['run']}: step {summary.get('step')}, {len(exports)} exports (peft, accelerate)"


CHECKS = [
    ("s2s --version", check_version, "gui"),
    ("s2s --screenshot (no torch)", check_screenshot, "gui"),
    ("engine hello", check_engine_hello, "engine"),
    ("s2s generate --demo", check_generate_demo, "gui"),
    ("s2s models add FOLDER", check_add_model_folder, "gui"),
    ("s2s train --demo (LoRA, 2 steps)", check_train_demo, "gui"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    s2s, engine = executables(args.dist.resolve())
    if not (s2s.exists() and engine.exists()):
        print(f"no bundle at {s2s.parent}: run `make bundle` first", file=sys.stderr)
        return 2
    failures = 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="s2s-smoke-") as tmp:
        work = Path(tmp)
        env = bundle_env(work / "home")
        for name, check, exe in CHECKS:
            start = time.perf_counter()
            try:
                detail, ok = check(s2s if exe == "gui" else engine, env, work), True
            except (SmokeFailure, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
                detail, ok = f"{type(exc).__name__}: {exc}", False
                failures += 1
            rows.append((name, "ok" if ok else "FAILED", time.perf_counter() - start, detail))
            print(f"{'ok' if ok else 'FAILED':6} {name} ({rows[-1][2]:.1f} s): {detail}", flush=True)
    print()
    print("| check | result | seconds | detail |")
    print("|---|---|---:|---|")
    for name, result, seconds, detail in rows:
        print(f"| {name} | {result} | {seconds:.1f} | {detail.splitlines()[0][:140]} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

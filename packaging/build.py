"""``make bundle``: build the onedir app with PyInstaller and pack it into a versioned archive.

    python packaging/build.py [--dist dist] [--work build/pyinstaller]

Writes ``dist/Subject2Subject/`` (Linux, Windows) or ``dist/Subject2Subject.app`` (macOS), the
archive ``dist/subject2subject-<version>-<os>-<arch>.tar.gz`` (``.zip`` on Windows) and
``dist/bundle-info.json`` (build time, sizes), and prints them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "s2s.spec"
APP_NAME = "Subject2Subject"


def platform_tag() -> str:
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("aarch64", "arm64")
    return f"{system}-{machine}"


def app_path(dist: Path) -> Path:
    """What a user opens: the .app on macOS, the folder elsewhere."""
    return dist / (f"{APP_NAME}.app" if sys.platform == "darwin" else APP_NAME)


def executables(dist: Path) -> tuple[Path, Path]:
    """(the GUI/CLI ``s2s``, the engine ``s2s-engine``) inside a built bundle."""
    folder = app_path(dist) / "Contents" / "MacOS" if sys.platform == "darwin" else app_path(dist)
    suffix = ".exe" if os.name == "nt" else ""
    return folder / f"s2s{suffix}", folder / f"s2s-engine{suffix}"


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def write_archive(source: Path, archive_stem: Path) -> Path:
    """A .zip on Windows (what Explorer opens), else a .tar.gz that keeps permissions and symlinks."""
    if os.name == "nt":
        archive = archive_stem.with_name(archive_stem.name + ".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in sorted(source.rglob("*")):
                zf.write(path, path.relative_to(source.parent))
        return archive
    archive = archive_stem.with_name(archive_stem.name + ".tar.gz")
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(source, arcname=source.name)
    return archive


def build(dist: Path, work: Path) -> dict:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise SystemExit("PyInstaller is not installed: run `make bundle` (it installs the [packaging] extra)") from None
    version = importlib.metadata.version("subject2subject")
    app = app_path(dist)
    if app.exists():
        shutil.rmtree(app)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--distpath", str(dist), "--workpath", str(work), str(SPEC)],
        check=True,
        cwd=ROOT,
    )
    build_s = time.perf_counter() - start
    dangling = sorted(str(p.relative_to(app)) for p in app.rglob("*") if p.is_symlink() and not p.exists())
    if dangling:
        # A link to a library the spec left out: it would fail the user's loader at run time, not here.
        raise SystemExit(f"the bundle has links to files it does not ship: {dangling}; "
                         "drop them in packaging/s2s.spec beside what they point to")
    start = time.perf_counter()
    archive = write_archive(app, dist / f"subject2subject-{version}-{platform_tag()}")
    archive_s = time.perf_counter() - start
    size, count = folder_size(app)
    info = {
        "version": version,
        "platform": platform_tag(),
        "python": platform.python_version(),
        "pyinstaller": importlib.metadata.version("pyinstaller"),
        "torch": _version_or_none("torch"),
        "app": str(app.relative_to(ROOT) if app.is_relative_to(ROOT) else app),
        "archive": archive.name,
        "build_s": round(build_s, 1),
        "archive_s": round(archive_s, 1),
        "app_bytes": size,
        "app_files": count,
        "archive_bytes": archive.stat().st_size,
        "largest": _largest_parts(app),
    }
    (dist / "bundle-info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _version_or_none(dist_name: str) -> str | None:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _largest_parts(app: Path, top: int = 6) -> dict[str, int]:
    """Size of each top-level part of the bundle's library folder, the biggest first."""
    internal = next((p for p in (app / "_internal", app / "Contents" / "Frameworks") if p.is_dir()), app)
    sizes = {}
    for child in internal.iterdir():
        if child.is_symlink():  # a link's size is its target's, counted under the target's name
            continue
        sizes[child.name] = folder_size(child)[0] if child.is_dir() else child.stat().st_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:top])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller")
    args = parser.parse_args(argv)
    info = build(args.dist.resolve(), args.work.resolve())
    mb = 1024 * 1024
    print(f"bundle: {info['app']} ({info['app_bytes'] / mb:.0f} MB, {info['app_files']} files)")
    print(f"archive: dist/{info['archive']} ({info['archive_bytes'] / mb:.0f} MB)")
    print(f"built in {info['build_s']:.0f} s, packed in {info['archive_s']:.0f} s "
          f"(PyInstaller {info['pyinstaller']}, torch {info['torch']}, Python {info['python']})")
    print("largest parts: " + ", ".join(f"{k} {v / mb:.0f} MB" for k, v in info["largest"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

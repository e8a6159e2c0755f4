"""Disk full: the library, settings and a training run on a small filesystem that fills up.

Where the machine allows it (root, or a container that may mount) the filesystem is real: a tmpfs
of a few MiB mounted for the test and unmounted after it, filled by a filler file, so the app's
real writers (Python files, SQLite's WAL, safetensors' Rust writer, torch.save) all meet a real
ENOSPC. Elsewhere, and with ``S2S_FAULT_DISK=inject``, ENOSPC is injected at the app's own write
layer instead (``settings.atomic_write``, the checkpoint writers, safetensors' ``save_file``, and a
COMMIT that fails with SQLITE_FULL). Each fault record's note says which one ran.

After every fault: a clear message (what, why, what to do), no partial file under a final name,
the catalog consistent, nothing the user had before lost, and everything works once space is freed.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.jobs import JobFailed
from engine.protocol import ErrorCode
from engine.train import checkpoint
from s2s_desktop import settings as app_settings
from s2s_desktop.library import Library, imaging, importer
from tests.fault.training_helpers import (
    artifacts,
    checkpoint_names,
    make_trainer,
    progress_steps,
    render_photos,
    weights_finite,
)

PAGE = 4096
ENOSPC_TEXT = "Error while serializing: I/O error: No space left on device (os error 28)"


def page_round(n: int) -> int:
    return -(-n // PAGE) * PAGE


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Quota:
    """The injected disk: ``remaining`` bytes may still be written under ``root`` (None: no limit)."""

    def __init__(self, root: Path):
        self.root, self.remaining = root, None

    def applies(self, path) -> bool:
        return self.remaining is not None and Path(os.path.abspath(path)).is_relative_to(self.root)

    def take(self, n: int) -> int:
        allowed = min(n, self.remaining)
        self.remaining -= allowed
        return allowed


class QuotaFile:
    """A file that takes its writes from the quota: a partial write, then ENOSPC, like a real disk."""

    def __init__(self, fh, quota: Quota):
        self._fh, self._quota = fh, quota

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        allowed = self._quota.take(view.nbytes)
        if allowed:
            self._fh.write(view[:allowed])
        if allowed < view.nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return view.nbytes

    def fileno(self):  # no file descriptor: PIL would write around the quota through it
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self._fh, name)


class SmallDisk:
    """A small filesystem at ``root``: ``fill(leave)`` leaves about ``leave`` bytes free (whole pages),
    ``release()`` frees them again."""

    def __init__(self, root: Path, mode: str, size: int, why: str = ""):
        self.root, self.mode, self.size, self.why = root, mode, size, why
        self.quota = Quota(root)
        self.fillers: list[Path] = []

    @property
    def note(self) -> str:
        if self.mode == "tmpfs":
            return f"real tmpfs of {self.size // 2**20} MiB"
        return f"ENOSPC injected at the app's write layer ({self.why})"

    def free_bytes(self) -> int:
        if self.mode == "tmpfs":
            stats = os.statvfs(self.root)
            return stats.f_bavail * stats.f_frsize
        return self.quota.remaining if self.quota.remaining is not None else self.size

    def fill(self, leave: int = 0) -> None:
        if self.mode != "tmpfs":
            self.quota.remaining = leave
            return
        # exact to the page: hold `leave` in a reserve file, fill everything else, drop the reserve
        reserve = self._write_until_full(self.root / f".reserve-{len(self.fillers)}", page_round(leave))
        self.fillers.append(self._write_until_full(self.root / f"filler-{len(self.fillers)}", None))
        reserve.unlink()
        assert self.free_bytes() == page_round(leave)

    @staticmethod
    def _write_until_full(path: Path, limit: int | None) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        written = 0
        try:
            for chunk in (1 << 20, PAGE):
                while limit is None or written < limit:
                    size = chunk if limit is None else min(chunk, limit - written)
                    try:
                        written += os.write(fd, b"\0" * size)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        assert limit is None or written == limit, f"no room for a {limit}-byte reserve"
        return path

    def release(self) -> None:
        self.quota.remaining = None
        for filler in self.fillers:
            filler.unlink(missing_ok=True)
        self.fillers.clear()


def _inject(monkeypatch, disk: SmallDisk) -> None:
    """ENOSPC at the app's own writers, for machines where the test cannot mount a filesystem."""
    import safetensors.torch

    from engine.train import ldm_convert

    real_atomic_write = app_settings.atomic_write

    def atomic_write(path, write):
        if not disk.quota.applies(path):
            return real_atomic_write(path, write)
        return real_atomic_write(path, lambda fh: write(QuotaFile(fh, disk.quota)))

    monkeypatch.setattr(app_settings, "atomic_write", atomic_write)
    monkeypatch.setattr(imaging, "atomic_write", atomic_write)

    real_save_file = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        if disk.quota.applies(filename):
            size = os.path.getsize(filename)
            allowed = disk.quota.take(size)
            if allowed < size:
                os.truncate(filename, allowed)
                raise safetensors.SafetensorError(ENOSPC_TEXT)  # what the Rust writer raises

    for module in (safetensors.torch, checkpoint, ldm_convert):
        monkeypatch.setattr(module, "save_file", save_file)

    real_write = checkpoint._WriteErrors.write

    def write(self, data):
        if disk.quota.applies(self.fh.name):
            allowed = disk.quota.take(memoryview(data).nbytes)
            if allowed < memoryview(data).nbytes:
                self.fh.write(memoryview(data).cast("B")[:allowed])
                self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                raise self.error
        return real_write(self, data)

    monkeypatch.setattr(checkpoint._WriteErrors, "write", write)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A size-limited tmpfs where mount is permitted, else the injected quota."""

    def make(size: int = 2 << 20) -> SmallDisk:
        root = tmp_path / "small-disk"
        root.mkdir()
        mounted, why = False, "S2S_FAULT_DISK=inject"
        if os.environ.get("S2S_FAULT_DISK") != "inject":
            why = "no mount command"
            if shutil.which("mount"):
                done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(root)],
                                      capture_output=True, text=True)
                mounted, why = done.returncode == 0, f"mount refused: {done.stderr.strip()[:80]}"
        disk = SmallDisk(root, "tmpfs" if mounted else "inject", size, why)
        if not mounted:
            _inject(monkeypatch, disk)
        made.append(disk)
        return disk

    made: list[SmallDisk] = []
    yield make
    for disk in made:
        disk.release()
        if disk.mode == "tmpfs":
            gc.collect()  # close SQLite connections still held by dropped Library objects
            if subprocess.run(["umount", str(disk.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(disk.root)], check=True)


def noise_photo(path: Path, seed: int, side: int = 160) -> Path:
    """A photo that does not compress: its file size is its pixel count, so fill levels are exact."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


LIMITS = importer.ImportLimits(min_short_side=64)


def library_state(library: Library, subject) -> dict[str, str]:
    """file name → content hash of every photo the catalog lists (fails if one is missing)."""
    return {r.path.name: sha(r.path) for r in library.images(subject.id)}


def assert_no_partial_files(library: Library, subject, sources: dict[str, str]) -> None:
    """Every file in the subject's folder is a catalog row's, byte-equal to the photo it came from."""
    listed = {r.path.name: r for r in library.images(subject.id)}
    folder = library.subject_folder(subject) / "images"
    on_disk = sorted(p.name for p in folder.iterdir())
    assert on_disk == sorted(listed), f"files not in the catalog (partial or orphan): {set(on_disk) - set(listed)}"
    for name, record in listed.items():
        assert sha(record.path) == sources[record.source_name], f"{name} differs from its source"


# --------------------------------------------------------------------------------------- library
def test_importing_onto_a_disk_that_fills_keeps_what_fits_and_refuses_the_rest_clearly(
    small_disk, tmp_path, faults
):
    disk = small_disk(2 << 20)
    photos = [noise_photo(tmp_path / f"photo-{i}.png", i) for i in range(8)]
    sources = {p.name: sha(p) for p in photos}
    library = Library(disk.root / "home")
    subject = library.create_subject("Biscuit", "dog")
    first = importer.import_files(library, subject, photos[:2], LIMITS)
    assert len(first.imported) == 2
    before = library_state(library, subject)

    size = photos[2].stat().st_size
    disk.fill(leave=int(2.5 * size))  # room for two more photos (and the catalog's few pages), not six
    report = importer.import_files(library, subject, photos[2:], LIMITS)
    imported = [Path(r.path).name for r in report.imported]
    refused = report.not_imported
    assert 1 <= len(imported) <= 2 and imported == [p.name for p in photos[2:2 + len(imported)]]
    assert len(refused) == 6 - len(imported)
    for result in refused:
        assert result.code == "disk_full", result
        assert "the disk is full" in result.reason and "Free some space" in result.reason
        assert str(library.home) in result.reason  # which disk
    assert_no_partial_files(library, subject, sources)
    assert library.integrity_problems() == []
    lost = sum(1 for name, digest in before.items() if library_state(library, subject).get(name) != digest)

    disk.release()
    assert library.clean_orphans() == []  # nothing was left behind to clean
    again = importer.import_files(library, subject, [Path(r.path) for r in refused], LIMITS)
    assert len(again.imported) == len(refused)
    library.close()
    reopened = Library(disk.root / "home")
    assert len(reopened.images(subject.id)) == 8 and reopened.integrity_problems() == []
    assert_no_partial_files(reopened, subject, sources)
    reopened.close()
    faults.record("disk full", "photo import onto a disk that fills part-way", tried=len(refused),
                  survived=len(refused), data_lost=lost, note=f"{disk.note}; {len(imported)} of 6 fitted")


def test_a_catalog_that_cannot_write_its_journal_refuses_the_photo_and_keeps_no_copy(small_disk, tmp_path, faults):
    disk = small_disk(2 << 20)
    photos = [noise_photo(tmp_path / f"photo-{i}.png", 10 + i) for i in range(3)]
    sources = {p.name: sha(p) for p in photos}
    library = Library(disk.root / "home")
    subject = library.create_subject("Biscuit", "dog")
    assert len(importer.import_files(library, subject, photos[:1], LIMITS).imported) == 1
    before = library_state(library, subject)

    restore = lambda: None  # noqa: E731
    if disk.mode == "tmpfs":
        # exactly the photo's pages free: the copy fits, the WAL frames of its COMMIT do not
        disk.fill(leave=photos[1].stat().st_size)
    else:
        restore = fail_commits(library)
    report = importer.import_files(library, subject, photos[1:2], LIMITS)
    (result,) = report.results
    assert result.status == "refused" and result.code == "disk_full", result
    assert "the disk is full" in result.reason and "nothing was half-written" in result.reason
    assert_no_partial_files(library, subject, sources)  # the copy that fitted was removed again
    assert library.integrity_problems() == []
    # a catalog write (not an import) on the full disk fails with SQLite's own clear error
    disk.fill(leave=0)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        library.create_subject("Rex", "dog")
    lost = sum(1 for name, digest in before.items() if library_state(library, subject).get(name) != digest)

    disk.release()
    restore()
    # the same connection goes on working: no transaction left open by the failed COMMITs
    assert len(importer.import_files(library, subject, photos[1:], LIMITS).imported) == 2
    assert library.create_subject("Rex", "dog").name == "Rex"
    library.close()
    reopened = Library(disk.root / "home")
    assert [s.name for s in reopened.subjects()] == ["Biscuit", "Rex"]
    assert len(reopened.images(subject.id)) == 3 and reopened.integrity_problems() == []
    reopened.close()
    faults.record("disk full", "catalog journal (WAL) cannot grow: import and row write", tried=2, survived=2,
                  data_lost=lost, note=disk.note if disk.mode == "tmpfs" else
                  f"SQLITE_FULL injected at COMMIT ({disk.why})")


class FailingCommits:
    """The library's connection, with every COMMIT failing as SQLite's does on a full disk."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self._conn.execute("ROLLBACK")  # SQLite rolls back a commit it cannot write
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorname = "SQLITE_FULL"
            raise error
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def fail_commits(library: Library):
    """Returns the function that puts the real connection back."""
    conn = library._connection()
    library._local.conn = FailingCommits(conn)
    return lambda: setattr(library._local, "conn", conn)


# --------------------------------------------------------------------------------------- settings
def test_settings_and_atomic_files_written_on_a_full_disk_keep_the_old_file(small_disk, monkeypatch, faults):
    disk = small_disk(1 << 20)
    home = disk.root / "home"
    monkeypatch.setenv("S2S_HOME", str(home))
    settings = app_settings.Settings(device="cuda")
    settings.save()
    saved = app_settings.Settings.path().read_bytes()
    thumb = home / "cache" / "thumb.png"
    imaging.save_png_atomic(Image.new("RGB", (8, 8), "red"), thumb)
    old_thumb = thumb.read_bytes()

    disk.fill(leave=8 * 1024)  # less than the new thumbnail, more than nothing
    settings.device = "cpu"
    settings.generate.negative_prompt = "blurry " * 2000  # 14 kB: does not fit in 8 kB
    tried = 0
    for write in (
        settings.save,
        lambda: imaging.save_png_atomic(Image.fromarray(np.random.default_rng(0).integers(
            0, 256, (96, 96, 3), dtype=np.uint8)), thumb),
        lambda: app_settings.atomic_write_text(home / "new-prompts.txt", "a photo\n" * 4000),
    ):
        tried += 1
        with pytest.raises(OSError) as info:
            write()
        assert info.value.errno == errno.ENOSPC  # "No space left on device", not a half file
    assert app_settings.Settings.path().read_bytes() == saved
    assert app_settings.Settings.load().device == "cuda"
    assert thumb.read_bytes() == old_thumb and not (home / "new-prompts.txt").exists()
    leftovers = [p for p in home.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers

    disk.release()
    settings.save()
    assert app_settings.Settings.load().device == "cpu"
    faults.record("disk full", "settings / atomic file writes on a full disk", tried=tried, survived=tried,
                  data_lost=0, note=disk.note)


# --------------------------------------------------------------------------------------- training
def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    return render_photos(tmp_path_factory.mktemp("disk-full-photos"))


@pytest.mark.parametrize("when", ["mid-run", "first-checkpoint"])
def test_a_training_run_that_fills_the_disk_stops_clearly_and_resumes_after_space_is_freed(
    small_disk, photos, faults, when
):
    disk = small_disk(8 << 20)
    run_dir = disk.root / "run"
    trainer = make_trainer(run_dir, photos, steps=6, checkpoint_every=2)
    saved: dict[str, dict[str, str]] = {}
    original_save = trainer.save_checkpoint

    def save_then_fill(step):
        original_save(step)
        folder = run_dir / "checkpoints" / f"step-{step:06d}"
        saved[folder.name] = snapshot(folder)
        if step == 2:  # another program fills the disk: a third of a checkpoint stays free
            disk.fill(leave=(sum(p.stat().st_size for p in folder.iterdir())) // 3)

    if when == "mid-run":
        trainer.save_checkpoint = save_then_fill
    else:
        run_dir.mkdir()
        disk.fill(leave=64 * 1024)  # the baseline sample fits, no checkpoint does
    with pytest.raises(JobFailed) as info:
        trainer.run()
    error = info.value
    failed_at = 4 if when == "mid-run" else 2
    assert error.code == ErrorCode.DISK_FULL
    assert f"the disk is full: checkpoint step-{failed_at:06d} could not be written" in error.message
    assert f"training stopped at step {failed_at}" in error.message
    assert max(progress_steps(trainer)) == failed_at  # stopped there, not later
    assert "free at least" in error.hint
    if when == "mid-run":
        assert "the last complete checkpoint (step-000002) is kept" in error.message
        assert "resume the run: it continues from step-000002" in error.hint
        # the last complete checkpoint is byte for byte what was written; no half one beside it
        assert checkpoint_names(run_dir) == ["step-000002"]
        assert snapshot(run_dir / "checkpoints" / "step-000002") == saved["step-000002"]
        assert weights_finite(run_dir / "checkpoints" / "step-000002")
    else:
        assert "start the run again" in error.hint
        assert checkpoint_names(run_dir) == []  # the half-written one was removed, not left as a temp
    assert not (run_dir / "exports").exists()
    lost = 0 if when != "mid-run" or snapshot(run_dir / "checkpoints" / "step-000002") == saved["step-000002"] else 1

    disk.release()
    resumed = make_trainer(run_dir, photos, resume=True, steps=6, checkpoint_every=2)
    result = resumed.run()
    assert result["step"] == 6 and result["exports"]
    if when == "mid-run":
        assert any(e["event"] == "log" and "resuming from step-000002" in e["message"] for e in resumed.events)
        assert min(progress_steps(resumed)) == 3
    assert checkpoint.latest(run_dir).name == "step-000006" and weights_finite(checkpoint.latest(run_dir))
    assert [a["step"] for a in artifacts(resumed, "checkpoint")][-1] == 6
    what = {"mid-run": "disk fills mid-run (after step-000002)", "first-checkpoint": "disk full before any checkpoint"}
    faults.record("disk full", f"training run: {what[when]}", tried=1, survived=1,
                  data_lost=lost, note=f"{disk.note}; resumed to step 6 after freeing space")


def test_a_disk_that_fills_while_exporting_keeps_the_final_checkpoint_and_re_exports_on_resume(
    small_disk, photos, faults
):
    disk = small_disk(8 << 20)
    run_dir = disk.root / "run"
    trainer = make_trainer(run_dir, photos, steps=4, checkpoint_every=2)
    original_save = trainer.save_checkpoint

    def save_then_fill(step):
        original_save(step)
        if step == 4:
            disk.fill(leave=100 * 1024)  # the final checkpoint is written; the exports do not fit

    trainer.save_checkpoint = save_then_fill
    with pytest.raises(JobFailed) as info:
        trainer.run()
    error = info.value
    assert error.code == ErrorCode.DISK_FULL
    assert "training finished but writing the exports failed: the disk is full" in error.message
    assert "free disk space, then resume the run" in error.hint
    final = checkpoint.latest(run_dir)
    assert final is not None and final.name == "step-000004" and weights_finite(final)
    exports = run_dir / "exports"
    # nothing half-written under a final name: only whole files, each loadable
    from safetensors.torch import load_file

    for path in exports.iterdir() if exports.is_dir() else []:
        assert not path.name.startswith("."), f"temp file left: {path.name}"
        if path.suffix == ".safetensors":
            load_file(str(path))

    disk.release()
    resumed = make_trainer(run_dir, photos, resume=True, steps=4, checkpoint_every=2)
    result = resumed.run()
    assert result["step"] == 4 and {e["format"] for e in result["exports"]} >= {"diffusers_lora", "kohya_lora"}
    faults.record("disk full", "training run: disk fills while exporting", tried=1, survived=1, data_lost=0,
                  note=f"{disk.note}; re-exported on resume")

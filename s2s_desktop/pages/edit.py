"""Edit page: Prompt-to-Prompt editing of a photo, a generated image or a prompt + seed.

Left: what to edit and how (:class:`EditForm`), the Edit/Cancel buttons and progress. Middle: the
canvas (original, edited, heatmap overlay, before/after), the prompts' words with reweight sliders,
and the heatmap controls (:class:`EditView`). Right: the history of edits from the library.

Moving a word's weight, a schedule or the subject's strength re-renders live: the engine caches the
source branch and the inversion, so a re-render only runs the edited branch (``reused_source``).
"""

from __future__ import annotations

import html
import shutil
import time
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from engine import protocol
from s2s_desktop import settings as app_settings
from s2s_desktop.edit_batch import EditBatch, pictures_in
from s2s_desktop.library import Library, LibraryError
from s2s_desktop.library import edits as library_edits
from s2s_desktop.library import runs as library_runs
from s2s_desktop.library.heatmaps import HeatmapError, load_heatmaps
from s2s_desktop.pages.edit_batch_view import BatchView
from s2s_desktop.pages.edit_form import IMAGE_SUFFIXES, EditForm
from s2s_desktop.pages.edit_history import EditHistory
from s2s_desktop.pages.edit_runner import EditRunner
from s2s_desktop.pages.edit_view import EditView
from s2s_desktop.pages.train_runs import METHOD_SHORT
from s2s_desktop.widgets.heatmap import read_rgb
from s2s_desktop.widgets.setters import set_enabled, set_progress, set_text

ERROR_STYLE = "color: #a93226;"
MODE_MEANINGS = {
    "replace": "swapped words took over the old words' attention",
    "refine": "the words both prompts share kept their attention",
    "same": "one prompt: reweights and heatmaps of the picture as it is",
}
NOTES_STYLE = "QLabel { background: palette(alternate-base); border: 1px solid palette(mid); padding: 6px; }"


def edits_dir() -> Path:
    """Where edits are written: the outputs folder, by day, like the Generate page's images."""
    return app_settings.outputs_dir() / time.strftime("%Y-%m-%d") / "edits"


class EditPage(QWidget):
    def __init__(self, engine, settings: app_settings.Settings, library: Library | None = None, parent=None):
        super().__init__(parent)
        self.engine = engine
        self.settings = settings
        self.library = library
        self.model_info: dict | None = None
        self.result: dict | None = None
        self.result_params: dict | None = None
        self.chain_edit_id: int | None = None  # the history row a live re-render replaces
        self.runner = EditRunner(engine, parent=self)
        self.setAcceptDrops(True)

        # ---- left: what and how
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.form = EditForm()
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.edit_button = QPushButton("Edit")
        self.edit_button.setDefault(True)
        self.edit_button.setMinimumHeight(34)
        self.edit_button.clicked.connect(self.on_edit)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.on_cancel)
        self.batch_button = QPushButton("Edit a folder…")
        self.batch_button.setToolTip("Make this edit to every picture in a folder, one after another: PNGs made "
                                     "here are regenerated from their own prompt and seed, other pictures are "
                                     "inverted with the source prompt")
        self.batch_button.clicked.connect(self.choose_batch_folder)
        self.batch_view: BatchView | None = None
        self.live = QCheckBox("Live: re-render while sliders move")
        self.live.setChecked(True)
        self.live.setToolTip("After an edit, moving a word's weight, a schedule or the subject's strength "
                             "renders again (the source is cached, so this is quick)")
        buttons = QHBoxLayout()
        buttons.addWidget(self.edit_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet(NOTES_STYLE)
        self.notes.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.notes.hide()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.model_label)
        left_layout.addWidget(scroll, 1)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.batch_button)
        left_layout.addWidget(self.live)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.status)
        left_layout.addWidget(self.notes)
        left.setFixedWidth(340)

        # ---- middle and right
        self.view = EditView()
        self.history = EditHistory(library)
        layout = QHBoxLayout(self)
        layout.addWidget(left)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.history)

        self.form.image_chosen.connect(self.open_source)
        self.form.prompts_changed.connect(self._on_prompts)
        for field in (self.form.source_prompt, self.form.target_prompt, self.form.negative_prompt):
            field.returnPressed.connect(self.on_edit)  # Enter in a prompt edits, as in a search box
        self.form.settings_changed.connect(self.request_live_render)
        self.form.subject_put_in.connect(self._on_subject_put_in)
        self.form.prompts_changed.connect(self._label_batch_button)
        self.form.subject.currentIndexChanged.connect(lambda *_: self._label_batch_button())
        for key in ("source", "target"):  # the word clicked is where "Put … in" puts the subject
            self.view.strips[key].word_clicked.connect(self.form.set_picked_word)
        self.view.strips["target"].reweight_changed.connect(lambda *_: self.request_live_render())
        self.view.strips["target"].blend_changed.connect(lambda *_: self.request_live_render())
        self.view.export_requested.connect(self.choose_export)
        self.history.edit_chosen.connect(self.restore)
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(self._on_cancelled)
        self.runner.busy_changed.connect(lambda busy: set_enabled(self.cancel_button, busy))
        engine.state_changed.connect(self._on_engine_state)
        self.set_model_info(getattr(engine.client, "loaded_model", None))
        self.refresh_library()
        self._on_prompts()

    # ------------------------------------------------------------------ model and library
    def _on_engine_state(self, state: str, detail: str) -> None:
        if state == "model":
            self.set_model_info(self.engine.client.loaded_model)
        elif state in ("loading", "died", "failed", "stopped"):
            self.set_model_info(None, waiting=detail if state == "loading" else "")

    def set_model_info(self, info: dict | None, waiting: str = "") -> None:
        self.model_info = info
        if info:
            self.form.native_resolution = int(info.get("native_resolution") or 0) or None
            text = f"Model: <b>{html.escape(info['name'])}</b> · {info.get('device', '')}"
        elif waiting:
            text = f"Loading the model <b>{html.escape(waiting)}</b>…"
        else:
            text = "The model is not loaded yet (the engine loads it at start; see Models…)."
        set_text(self.model_label, text)

    def showEvent(self, event) -> None:  # noqa: N802  (runs finish and edits are made elsewhere)
        self.refresh_library()
        super().showEvent(event)

    def refresh_library(self) -> None:
        if self.library is None:
            self.history.refresh()
            return
        runs = []
        for subject in self.library.subjects():
            for run in library_runs.runs_of(self.library, subject.id):
                if run.status == "finished" and (run.exports_dir / "run_config.json").is_file():
                    runs.append({
                        "label": f"{subject.name} · {METHOD_SHORT.get(run.method, run.method)} run #{run.id}",
                        "folder": str(run.exports_dir), "subject_id": subject.id, "subject": subject.name,
                        "token": run.token or subject.token, "class_noun": subject.class_noun,
                    })
        self.form.set_subject_runs(runs)
        self.history.refresh(select_id=self.chain_edit_id)

    # ------------------------------------------------------------------ parameters
    def job_params(self) -> dict:
        params = self.form.params()
        strip = self.view.strips["target"]
        params["reweight"] = strip.reweights() or None
        params["blend_words"] = strip.blend_words() or None
        params["out_dir"] = str(edits_dir())
        return {k: v for k, v in params.items() if v is not None}

    def _on_prompts(self) -> None:
        form = self.form
        self.view.set_prompts(form.source_prompt.text(), form.target_prompt.text(), form.negative_prompt.text())

    def check_params(self, params: dict) -> str:
        """What stops this edit from running ('' when nothing does)."""
        if not params["source_prompt"]:
            return "Type a source prompt: what the picture shows now (e.g. “a red star on a blue background”)."
        if self.model_info is None:
            return "No model is loaded yet: wait for it, or open Models… to choose one."
        try:
            protocol.validate_job("edit", params)
        except protocol.ProtocolError as exc:
            return f"{exc.message}" + (f" — {exc.hint}" if exc.hint else "")
        return ""

    # ------------------------------------------------------------------ running
    def on_edit(self) -> None:
        params = self.job_params()
        problem = self.check_params(params)
        if problem:
            self.show_status(problem, error=True)
            return
        self.chain_edit_id = None  # an explicit edit starts a new history entry
        self.show_status("Queued…")
        set_progress(self.progress, 0, 1)
        self.runner.run_now(params)

    def request_live_render(self) -> None:
        """A slider moved: re-render (debounced) when there is an edit on screen to refine."""
        if not self.live.isChecked() or self.result is None or self.model_info is None:
            return
        params = self.job_params()
        if not self.check_params(params):
            self.runner.run_later(params)

    def on_cancel(self) -> None:
        self.show_status("Cancelling…" if self.runner.cancel() else "Cancelled.")

    def _on_progress(self, phase: str, step: int, total: int) -> None:
        if total > 0:
            set_progress(self.progress, step, total)
            set_text(self.status, f"{phase}… step {step}/{total}")
        else:
            set_text(self.status, f"{phase}…")

    def _on_cancelled(self) -> None:
        set_progress(self.progress, 0, 1)
        self.show_status("Cancelled. The last edit is still shown.")

    def _on_failed(self, message: str, hint: str) -> None:
        set_progress(self.progress, 0, 1)
        # the form and the last result stay as they were: fix one thing and press Edit again
        self.show_status(f"The edit failed: {message}" + (f"\n{hint}" if hint else ""), error=True)

    def _on_finished(self, params: dict, result: dict, live: bool) -> None:
        self.show_result(params, result)
        seconds = result.get("seconds")
        how = " (source reused)" if result.get("reused_source") else ""
        self.show_status(f"Done in {seconds:.1f} s{how}." if seconds is not None else "Done.")
        set_progress(self.progress, 1, 1)
        self.record(params, result, replace=live)

    def record(self, params: dict, result: dict, replace: bool) -> None:
        """Keep the edit in the library (a live re-render replaces the entry it refined)."""
        if self.library is None or not result.get("edited"):
            return
        try:
            if replace and self.chain_edit_id is not None:
                library_edits.delete_edit(self.library, self.chain_edit_id)
            folder = (params.get("adapter") or {}).get("folder")
            run = next((r for r in self.form.subject_runs if r["folder"] == folder), None)
            edit = library_edits.record_edit(self.library, params, result, run["subject_id"] if run else None)
        except (LibraryError, OSError) as exc:
            self.show_status(f"{self.status.text()}\nNot added to the history: {exc}", error=True)
            return
        self.chain_edit_id = edit.id
        self.history.refresh(select_id=edit.id)

    # ------------------------------------------------------------------ putting a subject in
    def _on_subject_put_in(self, blend_words: list) -> None:
        """"Put … in" rewrote the target prompt (the strip shows its words already): local blend on the
        subject's words, then one re-render when an edit is on screen."""
        self.view.strips["target"].set_blend_words(blend_words)
        run = self.form.subject_run()
        self.show_status(f"{run['subject'] if run else 'The subject'} goes into the edited picture: press Edit"
                         + (" (or wait for the live render)." if self.result is not None and self.live.isChecked()
                            else "."))
        self.request_live_render()

    def try_run(self, run_id: int, ask_picture: bool = True) -> bool:
        """The Library's or Train page's "Try in a picture…": that run chosen as the subject, and a
        picture to put it into (cancelling the dialog leaves the page with the run chosen)."""
        if self.library is None:
            return False
        try:
            run = library_runs.get_run(self.library, run_id)
        except LibraryError as exc:
            self.show_status(str(exc), error=True)
            return False
        self.refresh_library()
        if not self.form.select_subject_run(str(run.exports_dir)):
            self.show_status(f"Run #{run_id} has not finished training (no exports yet).", error=True)
            return False
        chosen = self.form.subject_run()
        self.show_status(f"{chosen['label']} is chosen: open a picture, then “Put {chosen['subject']} in”.")
        if ask_picture:
            self.form.choose_image()  # → image_chosen → open_source
        return True

    def edit_image(self, path: str, run_id: int | None = None, scale: float | None = None,
                   put_in: bool = False) -> bool:
        """Generate → Compare's "Edit" / "Put subject in" on one of its images: the picture opened, the
        run of its column (or the one asked for) chosen, and for put_in the subject put in."""
        self.refresh_library()
        if not self.open_source(path):
            return False
        form = self.form
        form.target_prompt.setText("")  # a new picture: the old edit's target does not belong to it
        form.picked_word = ""
        folder = ""
        if run_id is not None and self.library is not None:
            try:
                folder = str(library_runs.get_run(self.library, run_id).exports_dir)
            except LibraryError:
                folder = ""
        if not folder or not form.select_subject_run(folder):
            form.subject.setCurrentIndex(0)
        elif scale is not None:
            form.lora_scale.set_value(scale, quiet=True)
        if put_in:
            if form.subject_run() is None:
                self.show_status("There is no finished run to put in: train one on the Train page.", error=True)
                return False
            if not form.put_subject_in():
                self.show_status(form.subject_hint.text(), error=True)
                return False
        return True

    # ------------------------------------------------------------------ batch
    def _label_batch_button(self, *_args) -> None:
        run = self.form.subject_run()
        text = f"Put {run['subject']} in a folder of pictures…" if run and self.form.batch_insertion() \
            else "Edit a folder of pictures…"
        set_text(self.batch_button, text)

    def choose_batch_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder of pictures to edit", str(Path.home()))
        if folder:
            pictures = pictures_in(folder)
            if not pictures:
                self.show_status(f"There are no pictures in {folder}.", error=True)
                return
            self.start_batch(pictures)

    def start_batch(self, pictures: list[str]) -> BatchView | None:
        """One edit job per picture with this form's settings, in a window filling as they finish."""
        if self.model_info is None:
            self.show_status("No model is loaded yet: wait for it, or open Models… to choose one.", error=True)
            return None
        if self.batch_view is not None and not self.batch_view.batch.over:
            self.batch_view.show()
            self.batch_view.raise_()
            self.show_status("A batch is still running: cancel it first.", error=True)
            return None
        insertion = self.form.batch_insertion()
        batch = EditBatch.build(pictures, self.job_params(), self.form.native_resolution, insertion)
        run = self.form.subject_run()
        title = (f"Put {run['subject']} into {len(pictures)} pictures" if insertion and run
                 else f"Edit {len(pictures)} pictures")
        if self.batch_view is not None:
            self.batch_view.shutdown()
            self.batch_view.deleteLater()
        self.batch_view = BatchView(self.engine, batch, self.library, run["subject_id"] if run else None, title,
                                    parent=self)
        self.batch_view.setWindowFlag(Qt.Window)
        self.batch_view.batch_over.connect(lambda: self.history.refresh(select_id=self.chain_edit_id))
        self.batch_view.show()
        self.batch_view.start()
        self.show_status(f"{title}: one after another, in their own window.")
        return self.batch_view

    # ------------------------------------------------------------------ results
    def show_result(self, params: dict, result: dict) -> None:
        self.result, self.result_params = result, params
        original = read_rgb(result["original"]) if result.get("original") else None
        edited = read_rgb(result["edited"]) if result.get("edited") else None
        self.view.set_pictures(original, edited)
        if result.get("original"):
            self.form.show_generated_source(result["original"])
        notes = [str(n) for n in result.get("notes") or []]
        heatmaps = None
        if result.get("heatmaps"):
            try:
                heatmaps = load_heatmaps(result["heatmaps"])
            except HeatmapError as exc:
                notes.append(str(exc))
        if result.get("reconstruction_psnr") is not None:
            notes.append(f"Inversion: the unedited source reconstructs at {result['reconstruction_psnr']:.1f} dB "
                         "PSNR (above ~30 dB looks the same).")
        if result.get("mode"):
            notes.insert(0, f"Mode: {result['mode']} ({MODE_MEANINGS.get(result['mode'], '')}).".replace(" ()", ""))
        self.notes.setText("\n".join(notes))
        self.notes.setVisible(bool(notes))
        self.view.set_heatmaps(heatmaps, result.get("source_words"), result.get("target_words"))
        if not any(self.view.strips[k].selected for k in ("source", "target", "negative")):
            self._pick_changed_word(params)
        if self.view.canvas.view == "original" or (self.view.canvas.view == "heatmap" and heatmaps is None):
            self.view.set_view("edited")

    def _pick_changed_word(self, params: dict) -> None:
        """Start the heatmap on what the edit changed: the first target word the source lacks."""
        source = {w.lower() for w in params.get("source_prompt", "").split()}
        changed = [w for w in params.get("target_prompt", "").split() if w.lower() not in source]
        if changed:
            view_mode = self.view.canvas.view
            self.view.pick_words("target", changed[:1])
            self.view.set_view(view_mode if view_mode != "original" else "edited")

    def restore(self, edit: library_edits.Edit) -> None:
        """Put an earlier edit back: its settings, words, pictures and heatmaps."""
        self.runner.stop()  # whatever was rendering belongs to the edit on screen before
        self.form.apply_params(edit.params, edit.params.get("image", ""))
        self._on_prompts()
        strip = self.view.strips["target"]
        strip.set_reweights(edit.params.get("reweight"))
        strip.set_blend_words(edit.params.get("blend_words"))
        missing = [p for p in (edit.result.get("edited"), edit.result.get("original")) if p and not Path(p).is_file()]
        self.show_result(edit.params, edit.result)
        self.chain_edit_id = None  # moving a slider now makes a new entry; the restored one stays
        self.runner.job_params = self.job_params()  # restoring is not a change to re-render
        if missing:
            self.show_status("Some of this edit's files are gone (moved or deleted): press Edit to make it "
                             "again.", error=True)
        else:
            self.show_status(f"Restored the edit of {edit.created_at}.")

    # ------------------------------------------------------------------ export and drops
    def choose_export(self, with_heatmap: bool) -> None:
        if not (self.result or {}).get("edited"):
            return
        default = str(Path.home() / Path(self.result["edited"]).name)
        path, _ = QFileDialog.getSaveFileName(self, "Export the edited image", default, "PNG image (*.png)")
        if path:
            self.export_to(path, with_heatmap)

    def export_to(self, path: str | Path, with_heatmap: bool = False) -> list[Path]:
        """Copy the edited PNG (with its metadata) to ``path``; with the heatmap, also the overlay as
        ``<name>-heatmap.png`` beside it. Returns what was written."""
        path = Path(path).with_suffix(".png")
        written = []
        try:
            shutil.copyfile(self.result["edited"], path)
            written.append(path)
            if with_heatmap:
                if self.view.overlay_pixels is None:
                    self.show_status("Exported the edited image; pick a word first to export its heatmap.")
                    return written
                overlay = path.with_name(f"{path.stem}-heatmap.png")
                Image.fromarray(self.view.overlay_pixels).save(overlay)
                written.append(overlay)
        except OSError as exc:
            self.show_status(f"Could not export to {path}: {exc}", error=True)
            return written
        self.show_status("Exported " + " and ".join(p.name for p in written) + f" to {path.parent}.")
        return written

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        files = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            self.open_source(files[0])
            event.acceptProposedAction()

    def open_source(self, path: str) -> bool:
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES or read_rgb(path) is None:
            self.show_status(f"{Path(path).name} is not a picture this page can open.", error=True)
            return False
        self.runner.stop()  # a new picture: whatever was rendering belongs to the old one
        self.form.set_source_image(path)
        self.result = self.result_params = None  # nothing on screen to re-render live
        self.chain_edit_id = None
        self.view.set_pictures(read_rgb(path), None)
        self.view.set_heatmaps(None)
        self.notes.hide()
        self.view.set_view("original")
        self.show_status("Type what the picture shows as the source prompt, change it in the target prompt, "
                         "and press Edit.")
        return True

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)

    def shutdown(self) -> None:
        self.runner.stop()
        if self.batch_view is not None:
            self.batch_view.shutdown()

"""Train page: a subject and its runs on the left, how to train in the middle (method, preset,
advanced settings, preflight), and the selected run on the right (:class:`RunMonitor`).

Runs are rows in the library; the engine trains one job at a time and queues the rest, so pressing
Train again queues another run. Pause cancels the job, which checkpoints where it stopped; Resume
goes on from that checkpoint.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from engine.protocol.training import launch_commands, preset
from s2s_desktop import settings as app_settings
from s2s_desktop.image_meta import read_parameters
from s2s_desktop.library import Library, LibraryError, Subject
from s2s_desktop.library import runs as library_runs
from s2s_desktop.library.runs import Run
from s2s_desktop.pages.train_monitor import RunMonitor, duration
from s2s_desktop.pages.train_runs import TrainJobs, run_status_text
from s2s_desktop.pages.train_subjects import SubjectRuns, empty_train_view, plural
from s2s_desktop.widgets.image_viewer import ImageViewer
from s2s_desktop.widgets.setters import set_enabled, set_text, set_tooltip, set_visible
from s2s_desktop.widgets.train_config import (
    ConfigEditor,
    MethodCards,
    check_config,
    errors_summary,
    preflight_text,
    summary_text,
)

ERROR_STYLE = "color: #a93226;"
RESULT_STYLE = "QLabel { background: palette(alternate-base); border: 1px solid palette(mid); padding: 6px; }"


class TrainPage(QWidget):
    open_library = Signal()
    try_run = Signal(int)  # a finished run's "Try in a picture…" (run id): the Edit page

    def __init__(self, engine, settings: app_settings.Settings, library: Library | None = None, parent=None):
        super().__init__(parent)
        self.engine = engine
        self.settings = settings
        self.library = library if library is not None else Library()
        self.model_info: dict | None = None
        self.jobs = TrainJobs(engine, self.library, self)
        self._seen: dict[int, tuple] = {}  # run id → (state, stop) the buttons were last set for
        self._config_problem = ""  # what is wrong with the settings ('' when they are valid)

        # ---- left: subject and its runs
        self.subjects = SubjectRuns(self.library, self.jobs.live.get)
        self.subjects.subject_changed.connect(self._apply_preset)
        self.subjects.run_selected.connect(self._show_selected_run)
        self.subjects.resume_button.clicked.connect(self.on_resume)
        self.subjects.folder_button.clicked.connect(self.open_run_folder)
        self.subjects.try_button.clicked.connect(self.on_try_run)
        self.resume_button, self.run_list = self.subjects.resume_button, self.subjects.run_list

        # ---- middle: how to train
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.cards = MethodCards()
        self.cards.method_changed.connect(self._on_method_changed)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced settings")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.RightArrow)
        self.advanced_toggle.setAutoRaise(True)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        self.editor = ConfigEditor()
        self.editor.hide()
        self.editor.edited.connect(lambda _: self.validate())
        self.editor.reset_button.clicked.connect(self.reset_settings)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.preflight_button = self._button("Preflight", self.on_preflight,
                                             "Time two steps and a sample: seconds per step, memory and ETA")
        self.train_button = self._button("Train", self.on_train, "Start a run (queued if another one is training)")
        self.train_button.setDefault(True)
        self.train_button.setMinimumHeight(32)
        self.pause_button = self._button("Pause (keeps progress)", self.on_pause,
                                         "Stop now and keep the progress: Resume goes on from here")
        self.cancel_button = self._button("Cancel (discards)", self.on_cancel,
                                          "Stop and delete its checkpoints: it cannot be resumed")
        self.launch_button = self._button("Run elsewhere…", self.on_export_launch,
                                          "Write this run for `accelerate launch` on a server or several GPUs")
        self.launch_button.setFlat(True)
        start_row, stop_row = QHBoxLayout(), QHBoxLayout()
        start_row.addWidget(self.preflight_button, 1)
        start_row.addWidget(self.train_button, 2)
        stop_row.addWidget(self.pause_button)
        stop_row.addWidget(self.cancel_button)
        self.preflight_result = QLabel()
        self.preflight_result.setWordWrap(True)
        self.preflight_result.setStyleSheet(RESULT_STYLE)
        self.preflight_result.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        setup = QWidget()
        setup_layout = QVBoxLayout(setup)
        setup_layout.setContentsMargins(0, 0, 8, 0)
        setup_layout.addWidget(self.model_label)
        setup_layout.addWidget(QLabel("<b>Method</b>"))
        setup_layout.addWidget(self.cards)
        setup_layout.addWidget(self.summary)
        setup_layout.addWidget(self.advanced_toggle, 0, Qt.AlignLeft)
        setup_layout.addWidget(self.editor)
        setup_layout.addWidget(self.problem)
        setup_layout.addLayout(start_row)
        setup_layout.addLayout(stop_row)
        setup_layout.addWidget(self.launch_button, 0, Qt.AlignLeft)
        setup_layout.addWidget(self.preflight_result)
        setup_layout.addWidget(self.status)
        setup_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(setup)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFixedWidth(370)

        # ---- right: the selected run
        self.monitor = RunMonitor()
        self.monitor.sample_clicked.connect(self.show_sample)

        self.main_view = QWidget()
        row = QHBoxLayout(self.main_view)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.subjects)
        row.addWidget(scroll)
        row.addWidget(self.monitor, 1)
        self.views = QStackedWidget()
        self.views.addWidget(self._build_empty_view())
        self.views.addWidget(self.main_view)
        layout = QVBoxLayout(self)
        layout.addWidget(self.views)

        self.jobs.changed.connect(self._on_run_changed)
        self.jobs.loss_added.connect(self._on_loss)
        self.jobs.sample_added.connect(self._on_sample)
        self.jobs.finished.connect(self._on_run_finished)
        engine.state_changed.connect(self._on_engine_state)
        self.cards.set_method("lora")
        self.set_model_info(getattr(engine.client, "loaded_model", None))
        self.refresh_subjects()

    def _button(self, text: str, slot, tooltip: str) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(slot)
        button.setToolTip(tooltip)
        return button

    def _build_empty_view(self) -> QWidget:
        self.empty_view = empty_train_view(self._button("Go to the Library", self.open_library.emit, ""))
        return self.empty_view

    def showEvent(self, event) -> None:  # subjects and photos change on the Library page
        self.refresh_subjects()
        super().showEvent(event)

    # ------------------------------------------------------------------ model
    def _on_engine_state(self, state: str, detail: str) -> None:
        if state == "model":
            self.set_model_info(self.engine.client.loaded_model)
        elif state in ("loading", "died", "failed", "stopped"):
            self.set_model_info(None, waiting=detail if state == "loading" else "")

    def set_model_info(self, info: dict | None, waiting: str = "") -> None:
        self.model_info = info
        if info:
            self.model_label.setText(f"Model: <b>{html.escape(info['name'])}</b> · {info['device']}")
        elif waiting:
            self.model_label.setText(f"Loading the model <b>{html.escape(waiting)}</b>…")
        else:
            self.model_label.setText("The model is not loaded yet (the engine loads it at start; see Models…).")
        self._apply_preset()

    def device_kind(self) -> str:
        return str((self.model_info or {}).get("device") or "cpu").split(":")[0]

    def is_toy_model(self) -> bool:
        """The shipped 64-px demo model trains with its own preset (see ``preset(toy=True)``)."""
        location = (self.model_info or {}).get("location") or (self.settings.active.source if self.settings.active else "")
        return Path(location).name == "toy-world"

    # ------------------------------------------------------------------ subjects and runs
    def current_subject(self) -> Subject | None:
        return self.subjects.current_subject()

    def selected_run(self) -> Run | None:
        return self.subjects.selected_run()

    def refresh_subjects(self, select_id: int | None = None) -> None:
        count = self.subjects.refresh_subjects(select_id)
        self.views.setCurrentWidget(self.main_view if count else self.empty_view)

    def _show_selected_run(self) -> None:
        run = self.selected_run()
        subject = self.current_subject()
        self.monitor.show_run(run, self.jobs.live.get(run.id) if run else None, subject.class_noun if subject else "")
        self._update_buttons()

    def _on_run_changed(self, run_id: int) -> None:
        try:
            run = library_runs.get_run(self.library, run_id)
        except LibraryError:
            return
        self.subjects.update_run(run)
        if self.monitor.run is not None and self.monitor.run.id == run_id:
            live = self.jobs.live.get(run_id)
            if live is not self.monitor.live:  # resumed: a new live state with the history from disk
                self._show_selected_run()
                return
            self.monitor.refresh(run)
        live = self.jobs.live.get(run_id)
        seen = (live.state, live.stop) if live else None
        if self._seen.get(run_id) != seen:  # progress alone changes no button
            self._seen[run_id] = seen
            self._update_buttons()
            if seen and seen[0] == "starting" and self.status.text().startswith(f"Run #{run_id} "):
                self.show_status("")  # "starts after…" is over: the monitor tells the rest

    def _on_loss(self, run_id: int, step: int, loss: float) -> None:
        if self.monitor.run is not None and self.monitor.run.id == run_id:
            self.monitor.add_loss(step, loss)

    def _on_sample(self, run_id: int, sample: dict) -> None:
        if self.monitor.run is not None and self.monitor.run.id == run_id:
            self.monitor.add_sample(sample)

    def _on_run_finished(self, run_id: int) -> None:
        live = self.jobs.live[run_id]
        try:
            run = library_runs.get_run(self.library, run_id)
        except LibraryError:  # its subject was deleted meanwhile
            return
        if live.state == "finished":
            seconds = run.result.get("seconds")
            took = f" in {duration(seconds)}" if seconds is not None else ""
            self.show_status(f"Run #{run_id} finished{took}: {plural(len(live.exports), 'file')} exported.")
        elif live.state == "failed":
            self.show_status(f"Run #{run_id} failed: {live.error}", error=True)
        else:
            self.show_status(f"Run #{run_id} {run_status_text(run, live)}.")

    # ------------------------------------------------------------------ method and settings
    def current_preset(self) -> dict:
        subject = self.current_subject()
        photos = subject.image_count if subject else 0
        return preset(self.cards.method(), photos, self.device_kind(), toy=self.is_toy_model())

    def _on_method_changed(self, method: str) -> None:
        self.editor.set_method(method)
        self._apply_preset()

    def _apply_preset(self) -> None:
        """New method, subject or model: the editor shows the preset, except what the user changed."""
        self.editor.set_values(self.current_preset())
        self.validate()

    def reset_settings(self) -> None:
        self.editor.forget_changes()
        self.editor.set_values(self.current_preset())
        self.validate()

    def _toggle_advanced(self, on: bool) -> None:
        self.editor.setVisible(on)
        self.advanced_toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)

    def validate(self) -> dict | None:
        """The config Train would use, or None (the reasons shown beside the fields)."""
        method = self.cards.method()
        config, errors = check_config(self.current_preset(), self.editor, method)
        self.editor.show_errors(errors)
        if config is not None:
            prefix = "Your settings: " if self.editor.touched else "Preset: "
            self.summary.setText(prefix + summary_text(method, config))
        self._config_problem = errors_summary(errors) if errors else ""
        if errors and not self.advanced_toggle.isChecked() and any(errors):
            self.advanced_toggle.setChecked(True)  # the field with the problem must be visible
        self._update_buttons()
        return config

    def _start_blocker(self, config_ok: bool) -> str:
        """Why Train and Preflight cannot run now ('' when they can)."""
        subject = self.current_subject()
        if subject is None:
            return "Choose a subject."
        if subject.image_count == 0:
            return f"{subject.name} has no photos: add some on the Library page."
        if self.model_info is None:
            return "Waiting for the model to load."
        return "" if config_ok else "Fix the settings marked in red."

    def _update_buttons(self) -> None:
        blocker = self._start_blocker(not self._config_problem)
        # why Train is greyed out, just above it (problems with the settings in red)
        set_text(self.problem, self._config_problem or blocker)
        set_visible(self.problem, bool(blocker))
        style = ERROR_STYLE if self._config_problem else ""
        if self.problem.styleSheet() != style:
            self.problem.setStyleSheet(style)
        set_enabled(self.train_button, not blocker)
        set_enabled(self.launch_button, not blocker)
        set_enabled(self.preflight_button, not blocker and self.preflight_button.text() == "Preflight")
        set_tooltip(self.train_button, blocker or "Start a run (queued if another one is training)")
        run = self.selected_run()
        live = self.jobs.live.get(run.id) if run else None
        active = live is not None and live.active and not live.stop
        set_enabled(self.pause_button, active)
        set_enabled(self.cancel_button, active)
        set_enabled(self.resume_button, run is not None and run.resumable and not (live and live.active)
                    and self.model_info is not None)
        set_enabled(self.subjects.folder_button, run is not None)
        finished = run is not None and run.status == "finished" and (run.exports_dir / "run_config.json").is_file()
        set_enabled(self.subjects.try_button, finished and not (live and live.active))

    # ------------------------------------------------------------------ actions
    @asyncSlot()
    async def on_train(self) -> None:
        config, subject = self.validate(), self.current_subject()
        if config is None or self._start_blocker(True) or subject is None:
            return
        info = self.model_info
        run = library_runs.create_run(self.library, subject, self.cards.method(), config, info["name"])
        self.subjects.refresh_runs(select_id=run.id)
        active = [live for live in self.jobs.active_runs() if live.run_id != run.id]
        self.show_status(f"Run #{run.id} starts after {plural(len(active), 'earlier run')}." if active
                         else f"Run #{run.id} is starting.")
        live = await self.jobs.launch(run, subject, config["resolution"] or info["native_resolution"], resume=False)
        if live.state == "failed":
            self.show_status(f"Run #{run.id} could not start: {live.error}", error=True)

    @asyncSlot()
    async def on_resume(self) -> None:
        run, info = self.selected_run(), self.model_info
        live = self.jobs.live.get(run.id) if run else None
        if run is None or info is None or (live is not None and live.active):  # e.g. a double click
            return
        if run.model and run.model != info["name"]:
            self.show_status(f"Run #{run.id} was trained on {run.model}; load that model (File ▸ Models…) to "
                             "resume it.", error=True)
            return
        try:
            subject = self.library.subject(run.subject_id)
        except LibraryError as exc:
            self.show_status(str(exc), error=True)
            return
        self.show_status(f"Resuming run #{run.id} from step {run.step}.")
        resolution = run.config.get("resolution") or info["native_resolution"]
        live = await self.jobs.launch(run, subject, resolution, resume=True)
        if live.state == "failed":
            self.show_status(f"Run #{run.id} could not resume: {live.error}", error=True)

    def on_pause(self) -> None:
        run = self.selected_run()
        if run is not None:
            self.jobs.stop(run.id, "pause")
            self.show_status(f"Pausing run #{run.id}: it saves a checkpoint at the current step, then stops. "
                             "Resume goes on from there.")

    def on_cancel(self) -> None:
        run = self.selected_run()
        live = self.jobs.live.get(run.id) if run else None
        if run is None or live is None:
            return
        if live.step > 0:
            answer = QMessageBox.question(
                self, "Cancel the run?",
                f"Run #{run.id} has trained {live.step} of {live.total} steps. Cancelling deletes its "
                "checkpoints, so it cannot be resumed. (Pause keeps them.)",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                return
        self.jobs.stop(run.id, "cancel")
        self.show_status(f"Cancelling run #{run.id}…")

    @asyncSlot()
    async def on_preflight(self) -> None:
        config, subject = self.validate(), self.current_subject()
        if config is None or self._start_blocker(True) or subject is None:
            return
        self.preflight_button.setText("Preflight…")
        self.preflight_button.setEnabled(False)
        waiting = " (after the runs in the queue)" if self.jobs.active_runs() else ""
        self.show_status(f"Preflight: timing two training steps and a sample{waiting}…")
        try:
            resolution = config["resolution"] or self.model_info["native_resolution"]
            result = await self.jobs.preflight(subject, self.cards.method(), config, resolution)
        except Exception as exc:
            self.show_status(f"The preflight failed: {exc}", error=True)
        else:
            self.preflight_result.setText(preflight_text(result))
            self.preflight_result.show()
            self.show_status("")
        finally:
            self.preflight_button.setText("Preflight")
            self._update_buttons()

    @asyncSlot()
    async def on_export_launch(self) -> None:
        config, subject, info, entry = self.validate(), self.current_subject(), self.model_info, self.settings.active
        if config is None or subject is None or info is None or entry is None:
            return
        run = library_runs.create_run(self.library, subject, self.cards.method(), config, info["name"])
        try:
            resolution = config["resolution"] or info["native_resolution"]
            path = await self.jobs.export_launch(run, subject, resolution, entry.load_params(self.settings.device))
        except Exception as exc:
            self.show_status(f"Could not write the launch file: {exc}", error=True)
            return
        self.subjects.refresh_runs(select_id=run.id)
        self.show_status(f"Run #{run.id} written to {path}. Run it with:\n" + "\n".join(launch_commands(path)))

    def show_sample(self, path: str) -> ImageViewer:
        viewer = ImageViewer(path, read_parameters(path), self, reusable=False)
        viewer.show()
        return viewer

    def on_try_run(self) -> None:
        run = self.selected_run()
        if run is not None and run.status == "finished" and (run.exports_dir / "run_config.json").is_file():
            self.try_run.emit(run.id)

    def open_run_folder(self) -> None:
        run = self.selected_run()
        if run is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(run.folder)))

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)

    def shutdown(self) -> None:
        """When the window closes: record what the engine is about to checkpoint and stop."""
        self.jobs.shutdown()

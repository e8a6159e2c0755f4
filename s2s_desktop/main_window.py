"""The main window: page navigation on the left, pages in the middle, jobs and log docks."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)
from qasync import asyncSlot

from s2s_desktop import __version__
from s2s_desktop import settings as app_settings
from s2s_desktop.pages.edit import EditPage
from s2s_desktop.pages.evaluate import EvaluatePage
from s2s_desktop.pages.generate import GeneratePage
from s2s_desktop.pages.library import LibraryPage
from s2s_desktop.pages.train import TrainPage
from s2s_desktop.pages.upcoming import UnavailablePage, UpcomingPage
from s2s_desktop.widgets.jobs_dock import JobsDock
from s2s_desktop.widgets.log_dock import LogDock
from s2s_desktop.widgets.models_dialog import ModelsDialog

PAGES = ("library", "train", "generate", "edit", "evaluate")
PAGE_TITLES = {"library": "Library", "train": "Train", "generate": "Generate", "edit": "Edit", "evaluate": "Evaluate"}


def open_library():
    """The library, or (None, why) when its catalog cannot be used (a newer app's, or damaged)."""
    import sqlite3

    from s2s_desktop.library import Library
    from s2s_desktop.library.schema import NewerCatalogError

    try:
        from s2s_desktop.library import consistency

        library = Library()
        # after a crash: import leftovers removed, interrupted galleries recorded as partial ones
        consistency.recover(library)
        return library, ""
    except NewerCatalogError as exc:
        return None, str(exc)
    except sqlite3.DatabaseError as exc:
        path = app_settings.app_home() / "library.sqlite3"
        return None, (f"the library catalog {path} cannot be read ({exc}). Your photos are still in the "
                      "subjects folder beside it; restore the catalog from a backup, or move it aside to "
                      "start a new one.")


class MainWindow(QMainWindow):
    def __init__(self, engine, settings: app_settings.Settings, start_engine: bool = True):
        super().__init__()
        self.engine = engine
        self.settings = settings
        self.setWindowTitle(f"Subject2Subject {__version__}")
        self.resize(1280, 820)

        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(150)
        self.nav.setIconSize(QSize(20, 20))
        self.nav.setStyleSheet("QListWidget#nav { font-size: 15px; } QListWidget#nav::item { padding: 10px 8px; }")
        self.stack = QStackedWidget()
        self.library_page = self.train_page = self.evaluate_page = None
        library, problem = open_library()
        self.generate_page = GeneratePage(engine, settings, library, library_problem=problem)
        self.generate_page.open_models.connect(self.show_models)
        self.generate_page.evaluate_requested.connect(self.open_evaluation)
        self.generate_page.edit_requested.connect(self.open_edit)
        built = {"generate": self.generate_page}
        if library is not None:
            self.library_page = LibraryPage(engine, settings, library)
            self.train_page = TrainPage(engine, settings, library)  # one library, one sqlite file
            self.train_page.open_library.connect(lambda: self.show_page("library"))
            self.train_page.try_run.connect(self.try_run_in_picture)
            self.library_page.try_run.connect(self.try_run_in_picture)
            self.evaluate_page = EvaluatePage(engine, settings, library)
            built.update(library=self.library_page, train=self.train_page, evaluate=self.evaluate_page)
        else:  # the rest of the app still works; the message says what to do
            built.update(library=UnavailablePage("Subject library", problem), train=UnavailablePage("Training", problem),
                         evaluate=UnavailablePage("Evaluation", problem))
        self.edit_page = EditPage(engine, settings, library)  # without a library: no history, no subjects
        built["edit"] = self.edit_page
        self.pages = {}
        for key in PAGES:
            page = built.get(key) or UpcomingPage(key)
            self.pages[key] = page
            self.stack.addWidget(page)
            self.nav.addItem(PAGE_TITLES[key])
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.nav)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.jobs_dock = JobsDock(engine, self)
        self.log_dock = LogDock(engine, app_settings.app_home() / "logs" / "engine.log", self)
        self.addDockWidget(Qt.BottomDockWidgetArea, self.jobs_dock)
        self.addDockWidget(Qt.BottomDockWidgetArea, self.log_dock)
        self.tabifyDockWidget(self.jobs_dock, self.log_dock)
        self.jobs_dock.raise_()
        self.resizeDocks([self.jobs_dock], [170], Qt.Vertical)

        self.engine_status = QLabel()
        self.statusBar().addPermanentWidget(self.engine_status)
        self._build_menus()
        self.models_dialog: ModelsDialog | None = None
        engine.state_changed.connect(self.on_engine_state)
        self.show_page("generate")
        self.on_engine_state("stopped" if not start_engine else "starting", "")
        if start_engine:
            engine.start_in_background()

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        models = QAction("&Models…", self)
        models.setShortcut("Ctrl+M")
        models.triggered.connect(self.show_models)
        outputs = QAction("Open &outputs folder", self)
        outputs.triggered.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(app_settings.outputs_dir())))
        )
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut("Ctrl+Q")
        quit_action.triggered.connect(self.close)
        for action in (models, outputs, quit_action):
            file_menu.addAction(action)
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.jobs_dock.toggleViewAction())
        view_menu.addAction(self.log_dock.toggleViewAction())
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("&About", self)
        about.triggered.connect(
            lambda: QMessageBox.about(
                self,
                "Subject2Subject",
                f"Subject2Subject {__version__}\nPersonalised text-to-image on your own computer.\n"
                f"Data folder: {app_settings.app_home()}",
            )
        )
        help_menu.addAction(about)

    def show_page(self, key: str) -> None:
        self.nav.setCurrentRow(PAGES.index(key))

    def open_evaluation(self, gallery_id: int) -> None:
        """Generate → Compare's "Evaluate…": the Evaluate page with that gallery picked."""
        if self.evaluate_page is None:
            return
        self.show_page("evaluate")
        self.evaluate_page.select_gallery(gallery_id)

    def try_run_in_picture(self, run_id: int) -> None:
        """Library's or Train's "Try in a picture…": the Edit page with that run chosen, and a picture
        to open (cancelling the dialog leaves the page with the run chosen)."""
        self.show_page("edit")
        self.edit_page.try_run(run_id)

    def open_edit(self, request: dict) -> None:
        """Generate → Compare's "Edit" / "Put … in" on one of its images."""
        self.show_page("edit")
        self.edit_page.edit_image(request["path"], request.get("run_id"), request.get("scale"),
                                  put_in=bool(request.get("put_in")))

    def show_models(self) -> None:
        if self.models_dialog is None:
            self.models_dialog = ModelsDialog(self.engine, self.settings, self)
            self.models_dialog.model_loaded.connect(self.generate_page.set_model_info)
        self.models_dialog.refresh()
        self.models_dialog.show()
        self.models_dialog.raise_()

    def on_engine_state(self, state: str, detail: str) -> None:
        labels = {
            "starting": "Engine starting…",
            "ready": "Engine ready",
            "loading": f"Loading {detail}…",
            "model": f"Model: {detail}",
            "died": f"Engine stopped: {detail} — restarting",
            "failed": f"Engine: {detail}",
            "stopped": "Engine not running",
        }
        self.engine_status.setText(labels.get(state, state))
        if state == "died":
            self.statusBar().showMessage(f"The engine stopped: {detail}. Restarting it.", 15000)
        if state == "ready" and self.engine.client.restarts == 0:
            self.on_first_ready()
        if state == "model" and self.engine.client.loaded_model:
            self.generate_page.set_model_info(self.engine.client.loaded_model)

    @asyncSlot()
    async def on_first_ready(self) -> None:
        """Load the active model as soon as the engine is up (the user's last choice)."""
        entry = self.settings.active
        if entry is None:
            return
        try:
            await self.engine.load_model(entry.load_params(self.settings.device))
        except Exception as exc:
            self.statusBar().showMessage(f"Could not load {entry.name}: {exc}", 20000)

    def closeEvent(self, event) -> None:
        for page in (self.library_page, self.train_page, self.edit_page, self.generate_page, self.evaluate_page):
            if page is not None:
                page.shutdown()
        self.engine.close()
        super().closeEvent(event)

"""Models dialog: add a base model (folder, .safetensors file, hub id), choose the active one."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)
from qasync import asyncSlot

from engine.protocol.names import is_hub_id
from s2s_desktop.demo import DEMO_MODEL_NAME
from s2s_desktop.settings import ModelEntry, Settings

KIND_LABELS = {"folder": "diffusers folder", "single_file": "single file", "hub": "Hugging Face hub"}


def default_name(source: str) -> str:
    path = Path(source)
    if path.exists():
        return path.stem if path.is_file() else path.name
    return source.split("/")[-1]


class ModelsDialog(QDialog):
    model_loaded = Signal(dict)  # load_model's result

    def __init__(self, engine, settings: Settings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.setObjectName("models_dialog")
        self.engine = engine
        self.settings = settings
        self.download_job: str | None = None
        self.busy = False

        self.list = QListWidget()
        self.list.itemDoubleClicked.connect(lambda item: self.on_use())
        self.use_button = QPushButton("Use selected")
        self.use_button.clicked.connect(self.on_use)
        self.remove_button = QPushButton("Remove from list")
        self.remove_button.setToolTip("Forget this model; files on disk are not deleted.")
        self.remove_button.clicked.connect(self.on_remove)
        row = QHBoxLayout()
        row.addWidget(self.use_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)

        self.add_folder_button = QPushButton("Add diffusers folder…")
        self.add_folder_button.clicked.connect(self.on_add_folder)
        self.add_file_button = QPushButton("Add checkpoint file…")
        self.add_file_button.clicked.connect(self.on_add_file)
        self.allow_pickle = QCheckBox("Allow pickle checkpoints (.ckpt/.pt) — they can run code; only for files you trust")
        add_row = QHBoxLayout()
        add_row.addWidget(self.add_folder_button)
        add_row.addWidget(self.add_file_button)
        add_row.addStretch(1)

        self.hub_id = QLineEdit()
        self.hub_id.setPlaceholderText("hub id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.on_download)
        self.cancel_download_button = QPushButton("Cancel")
        self.cancel_download_button.setEnabled(False)
        self.cancel_download_button.clicked.connect(self.on_cancel_download)
        hub_row = QHBoxLayout()
        hub_row.addWidget(self.hub_id, 1)
        hub_row.addWidget(self.download_button)
        hub_row.addWidget(self.cancel_download_button)
        self.download_progress = QProgressBar()
        self.download_progress.setVisible(False)

        self.message = QLabel("")
        self.message.setObjectName("models_message")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)

        close = QPushButton("Close")
        close.clicked.connect(self.close)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Your base models</b>"))
        layout.addWidget(self.list, 1)
        layout.addLayout(row)
        layout.addSpacing(8)
        layout.addWidget(QLabel("<b>Add a model</b>"))
        layout.addLayout(add_row)
        layout.addWidget(self.allow_pickle)
        layout.addLayout(hub_row)
        layout.addWidget(self.download_progress)
        layout.addWidget(self.message)
        layout.addLayout(bottom)
        self.resize(640, 480)
        engine.event.connect(self.on_event)
        self.refresh()

    # ------------------------------------------------------------------ list
    def refresh(self) -> None:
        self.list.clear()
        for entry in self.settings.models:
            active = entry.name == self.settings.active_model
            label = f"{entry.name}   —   {KIND_LABELS.get(entry.kind, entry.kind)}   ·   {entry.source}"
            item = QListWidgetItem(("● " if active else "    ") + label)
            item.setData(Qt.UserRole, entry.name)
            if active:
                font = QFont()
                font.setBold(True)
                item.setFont(font)
            self.list.addItem(item)

    def selected_entry(self) -> ModelEntry | None:
        items = self.list.selectedItems()
        return self.settings.find_model(items[0].data(Qt.UserRole)) if items else None

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet(
            "background:#fdecea; color:#8a1c12; padding:6px; border-radius:4px;" if error else "padding:6px;"
        )
        self.message.setText(text)

    # ------------------------------------------------------------------ actions
    def on_add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder (with model_index.json)")
        if folder:
            self.add_source(folder)

    def on_add_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a checkpoint", "", "Checkpoints (*.safetensors *.ckpt *.pt *.pth);;All files (*)"
        )
        if path:
            self.add_source(path)

    @asyncSlot()
    async def add_source(self, source: str, name: str | None = None) -> bool:
        """Load the model in the engine (the real check), then remember it and make it active."""
        entry = ModelEntry(name=name or default_name(source), source=source, allow_pickle=self.allow_pickle.isChecked())
        self.show_message(f"Loading {entry.name}…")
        ok = await self._load(entry)
        if ok:
            self.settings.add_model(entry)
            self.settings.active_model = entry.name
            self.settings.save()
            self.refresh()
        return ok

    @asyncSlot()
    async def on_use(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        self.show_message(f"Loading {entry.name}…")
        if await self._load(entry):
            self.settings.active_model = entry.name
            self.settings.save()
            self.refresh()

    async def _load(self, entry: ModelEntry) -> bool:
        self.busy = True
        try:
            info = await self.engine.load_model(entry.load_params(self.settings.device))
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            hint = getattr(exc, "hint", "")
            self.show_message(f"Could not add {entry.name}: {message}" + (f"<br><i>What to do:</i> {hint}" if hint else ""), error=True)
            return False
        finally:
            self.busy = False
        entry.kind = info.get("kind", entry.kind)
        self.show_message(
            f"Loaded <b>{info['name']}</b> on {info['device']} ({info['dtype']}), "
            f"native size {info['native_resolution']} px, in {info['load_s']:.1f} s."
        )
        self.model_loaded.emit(info)
        return True

    def on_remove(self) -> None:
        entry = self.selected_entry()
        if entry is not None and entry.name == DEMO_MODEL_NAME:
            self.show_message("The toy-world demo model is built in and stays in the list.")
            return
        if entry is not None:
            self.settings.remove_model(entry.name)
            self.settings.save()
            self.refresh()
            self.show_message(f"Removed {entry.name} from the list (its files were not touched).")

    @asyncSlot()
    async def on_download(self) -> None:
        repo_id = self.hub_id.text().strip()
        if not is_hub_id(repo_id):
            self.show_message("A hub id looks like owner/name, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5.", error=True)
            return
        self.download_button.setEnabled(False)
        self.download_progress.setVisible(True)
        self.download_progress.setRange(0, 0)
        self.show_message(f"Downloading {repo_id}…")
        try:
            self.download_job = await self.engine.submit("download_model", {"repo_id": repo_id}, label=repo_id)
            self.cancel_download_button.setEnabled(True)
        except Exception as exc:
            self.download_button.setEnabled(True)
            self.download_progress.setVisible(False)
            self.show_message(f"Could not start the download: {exc}", error=True)

    def on_cancel_download(self) -> None:
        if self.download_job:
            self.engine.cancel(self.download_job)

    def on_event(self, message: dict) -> None:
        if message.get("job") != self.download_job or self.download_job is None:
            return
        name = message.get("event")
        if name == "progress":
            total = int(message.get("total") or 0)
            # Bytes overflow QProgressBar's int range for multi-GB models: show MB.
            self.download_progress.setRange(0, max(total // 2**20, 1))
            self.download_progress.setValue(int(message.get("step", 0)) // 2**20)
            self.download_progress.setFormat(f"%v / %m MB · {message.get('file', '')}")
        elif name in ("finished", "failed", "cancelled"):
            self.download_job = None
            self.download_button.setEnabled(True)
            self.cancel_download_button.setEnabled(False)
            self.download_progress.setVisible(False)
            if name == "finished":
                repo_id = (message.get("result") or {}).get("repo_id") or self.hub_id.text().strip()
                self.add_source(repo_id, name=repo_id.split("/")[-1])
            elif name == "cancelled":
                self.show_message("Download cancelled; files already fetched stay in the cache.")
            else:
                error = message.get("error") or {}
                self.show_message(f"Download failed: {error.get('message')}<br>{error.get('hint', '')}", error=True)

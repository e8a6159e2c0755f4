"""Qt face of the engine client: callbacks from reader threads become Qt signals on the GUI thread,
and requests become awaitables for qasync coroutines."""

from __future__ import annotations

import asyncio
import threading

from PySide6.QtCore import QObject, Signal

from s2s_desktop.engine_client import EngineClient, JobRecord


class QtEngine(QObject):
    event = Signal(dict)  # every protocol event (plus the client's "queued" and synthetic "failed")
    log_line = Signal(str)  # one line of the engine's stderr
    state_changed = Signal(str, str)  # starting | ready | loading | model | died | failed | stopped, detail
    job_changed = Signal(str)  # job id whose JobRecord changed

    def __init__(self, client: EngineClient | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.client = client or EngineClient()
        # Signals emitted from the client's threads are delivered queued on this object's thread.
        self.client.on_event = self._forward_event
        self.client.on_log = self.log_line.emit
        self.client.on_state = self.state_changed.emit
        self.state = "stopped"
        self.state_detail = ""
        self.state_changed.connect(self._remember_state)

    def _forward_event(self, message: dict) -> None:
        self.event.emit(message)
        self.job_changed.emit(message.get("job", ""))

    def _remember_state(self, state: str, detail: str) -> None:
        self.state, self.state_detail = state, detail

    @property
    def jobs(self) -> dict[str, JobRecord]:
        return self.client.jobs

    def start_in_background(self) -> None:
        """Spawn + handshake off the GUI thread so the window shows at once."""

        def run():
            try:
                self.client.start()
            except Exception as exc:
                self.state_changed.emit("failed", f"could not start the engine: {exc}")

        threading.Thread(target=run, name="s2s-engine-start", daemon=True).start()

    async def call(self, method: str, params: dict | None = None) -> dict:
        return await asyncio.wrap_future(self.client.request(method, params))

    async def load_model(self, params: dict) -> dict:
        self.state_changed.emit("loading", params.get("name") or params.get("source", ""))
        try:
            info = await asyncio.wrap_future(self.client.load_model(params))
        except Exception:
            self.state_changed.emit("ready", "")
            raise
        self.state_changed.emit("model", info.get("name", ""))
        return info

    async def submit(self, kind: str, params: dict, label: str = "") -> str:
        result = await asyncio.wrap_future(self.client.submit(kind, params, label))
        return result["job"]

    def cancel(self, job_id: str) -> None:
        self.client.cancel(job_id)

    def close(self) -> None:
        self.client.close()

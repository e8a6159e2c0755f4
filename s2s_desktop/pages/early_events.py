"""Events that reach a page before the job id they belong to.

The engine answers ``submit`` and starts the job at once, so its first events can arrive while the
page still awaits ``submit()``. A page that runs one job of one kind at a time holds those events
(for jobs of its kind only, bounded) and replays them once it knows its job's id.
"""

from __future__ import annotations

MAX_HELD_EVENTS = 5000


class EarlyEvents:
    def __init__(self, engine, kind: str, limit: int = MAX_HELD_EVENTS):
        self.engine, self.kind, self.limit = engine, kind, limit
        self.submitting = False
        self._held: dict[str, list[dict]] = {}

    def hold(self, message: dict) -> None:
        """Keep an event of an unknown job while a submit of this kind is in flight."""
        job = message.get("job")
        if not self.submitting or job is None:
            return
        record = self.engine.jobs.get(job)
        if record is not None and record.kind == self.kind:
            buffer = self._held.setdefault(job, [])
            if len(buffer) < self.limit:
                buffer.append(message)

    def release(self, job: str) -> list[dict]:
        """The held events of ``job``, in order; the rest (other pages' jobs) are dropped."""
        messages = self._held.pop(job, [])
        self._held.clear()
        return messages

    async def submit(self, params: dict, label: str) -> str:
        """Submit a job of this kind, holding its events while ``submit()`` is awaited; the job id
        (the engine's error propagates, with holding stopped)."""
        self.submitting = True
        try:
            return await self.engine.submit(self.kind, params, label=label)
        finally:
            self.submitting = False

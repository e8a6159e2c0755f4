import pytest

from engine.jobs import Job, JobCancelled, JobContext


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_is_throttled_to_ten_per_second_and_final_step_always_sent():
    clock, sent = FakeClock(), []
    ctx = JobContext(Job("generate", {}), sent.append, clock=clock)
    for step in range(1, 1001):
        clock.now += 0.001  # 1000 steps in one second
        ctx.progress(step, 1000)
    assert 9 <= len(sent) <= 11
    assert sent[-1]["step"] == 1000 and sent[-1]["total"] == 1000


def test_eta_from_step_rate():
    clock, sent = FakeClock(), []
    ctx = JobContext(Job("generate", {}), sent.append, clock=clock)
    ctx.progress(0, 10, force=True)
    clock.now = 2.0
    ctx.progress(4, 10, force=True)  # 0.5 s/step, 6 left
    assert sent[-1]["eta_s"] == pytest.approx(3.0)


def test_cancel_is_noticed_at_the_next_step():
    sent = []
    job = Job("generate", {})
    ctx = JobContext(job, sent.append)
    ctx.progress(1, 10)
    job.cancel_requested.set()
    with pytest.raises(JobCancelled):
        ctx.progress(2, 10)

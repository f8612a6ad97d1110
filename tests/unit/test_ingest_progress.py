"""The ingestion progress line: counts, rate and ETA from the tracker's snapshot."""

from __future__ import annotations

import io
import logging
import os

from ember.ingest.progress import Totals, describe, run_with_progress
from ember.ray_session import ray_logs_to


def snapshot(files=0, nbytes=0, chunks_read=0, written=0, base_write=None, last_write=None,
             base_chunks=0) -> dict:
    return {"files_read": files, "bytes_read": nbytes, "chunks_read": chunks_read,
            "chunks_written": written, "base_write": base_write,
            "last_write": base_write if last_write is None else last_write,
            "base_chunks": base_chunks}


def test_before_any_file_is_read_the_total_is_unknown():
    line = describe(snapshot(), Totals(files=6, bytes=6000))
    assert line == ("0/6 files read, 0/? chunks written "
                    "(starting workers, loading the embedder)")


def test_expected_chunks_extrapolate_from_the_bytes_read():
    # 2 of 6 files read, 1000 of 4000 bytes, 20 chunks: 80 chunks expected in all.
    state = snapshot(files=2, nbytes=1000, chunks_read=20, written=65, base_write=100.0,
                     last_write=130.0, base_chunks=5)
    line = describe(state, Totals(files=6, bytes=4000))
    # 60 chunks in the 30 s after the base write: 2 chunks/s, 15 to go: 8 s.
    assert line == "2/6 files read, 65/80 chunks written, 2.0 chunks/s, ETA 8s"


def test_no_rate_until_the_writes_span_thirty_seconds():
    # Two actors' first blocks, a second apart, are not a rate of 700 chunks/s.
    state = snapshot(files=4, nbytes=4000, chunks_read=40, written=20, base_write=100.0,
                     last_write=101.0, base_chunks=10)
    line = describe(state, Totals(files=8, bytes=8000))
    assert line == "4/8 files read, 20/80 chunks written (measuring the rate)"


def test_long_etas_read_in_minutes():
    state = snapshot(files=1, nbytes=100, chunks_read=10, written=4, base_write=0.0,
                     last_write=30.0, base_chunks=1)
    line = describe(state, Totals(files=100, bytes=10_000))
    assert line.endswith("0.1 chunks/s, ETA 166m00s")  # 996 to go


def test_the_rate_base_is_the_newest_write_a_window_old():
    from ember.ingest.progress import RATE_WINDOW_S, WriteLog

    log = WriteLog()
    assert log.base() == (None, 0)
    for second, total in [(0, 700), (1, 1400), (15, 2100), (61, 2800), (75, 3500)]:
        log.add(float(second), total)
    # at 75 s the newest write at least 60 s older is the one at 15 s
    assert RATE_WINDOW_S == 60.0 and log.base() == (15.0, 2100)
    log.add(200.0, 4200)  # a long gap: the previous write is the base
    assert log.base() == (75.0, 3500)


class FakeTracker:
    """Stands in for the actor handle: `snapshot.remote()` returns a plain dict."""

    class _Method:
        def __init__(self, state):
            self.state = state

        def remote(self):
            return self.state

    def __init__(self, state):
        self.snapshot = self._Method(state)


def test_run_with_progress_returns_the_result_and_prints_a_final_line(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "get", lambda ref: ref)
    out = io.StringIO()
    state = snapshot(files=1, nbytes=10, chunks_read=3, written=3, base_write=1.0)
    assert run_with_progress(lambda: 42, FakeTracker(state), Totals(1, 10), out=out) == 42
    assert out.getvalue().startswith("  1/1 files read, 3/3 chunks written")


def test_run_with_progress_reraises_the_work_error(monkeypatch):
    import pytest
    import ray

    monkeypatch.setattr(ray, "get", lambda ref: ref)

    def fail():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_with_progress(fail, FakeTracker(snapshot()), Totals(1, 10), out=io.StringIO())


def test_library_logs_and_raw_stderr_go_to_the_file_then_come_back(tmp_path, capfd):
    path = tmp_path / "run" / "ray.log"
    with ray_logs_to(path):
        logging.getLogger("ray.data").warning("a ray data warning")
        os.write(2, b"a line from C++\n")
    os.write(2, b"after\n")
    text = path.read_text()
    assert "a ray data warning" in text and "a line from C++" in text
    err = capfd.readouterr().err
    assert "a ray data warning" not in err and "a line from C++" not in err
    assert "after" in err


def test_prints_from_rays_threads_go_to_the_file(tmp_path, capsys):
    import threading

    path = tmp_path / "ray.log"
    with ray_logs_to(path):
        thread = threading.Thread(target=print, args=("(raylet) WARNING: 8 workers",),
                                  name="ray_listen_error_messages")
        thread.start()
        thread.join()
        print("an Ember line")
    assert "(raylet) WARNING" in path.read_text()
    out = capsys.readouterr().out
    assert "an Ember line" in out and "raylet" not in out


def test_workers_ember_lines_reach_the_terminal_without_rays_prefix(tmp_path, capsys):
    """`ember train`: Ray's print thread forwards every worker line; those tagged
    `[ember.` stay on the terminal (print writes a line in pieces), the rest go to the file."""
    import threading

    def forward():
        print("\x1b[36m(RayTrainWorker pid=812)\x1b[0m [ember.train] step 5/60 loss 2.1")
        print("(TrainController pid=77) Reporting training result 5: TrainingReport(...)")
        print("(RayTrainWorker pid=812) Loading weights: 100%|#####|")

    path = tmp_path / "ray.log"
    with ray_logs_to(path, keep="[ember."):
        thread = threading.Thread(target=forward, name="ray_print_logs")
        thread.start()
        thread.join()
        print("[ember.train] MLflow run abc")
    out = capsys.readouterr().out
    assert out.splitlines() == ["[ember.train] step 5/60 loss 2.1",
                                "[ember.train] MLflow run abc"]
    text = path.read_text()
    assert "Reporting training result 5" in text and "Loading weights" in text
    assert "ember.train" not in text


def test_a_library_reconfiguring_logging_does_not_close_the_file(tmp_path, capsys):
    """pymilvus calls logging.config.dictConfig on import, which closes every handler there
    is: `ember ingest` imports it inside the block, then prints and flushes its progress line.
    (Closed here by hand: a real dictConfig would close pytest's own handlers too.)"""
    path = tmp_path / "ray.log"
    with ray_logs_to(path):
        for handler in logging.getLogger("ray.data").handlers:
            handler.close()  # what dictConfig does to it
        print("  68/530 files read", flush=True)
        os.write(2, b"a line from C++\n")
    assert "68/530 files read" in capsys.readouterr().out
    assert "a line from C++" in path.read_text()

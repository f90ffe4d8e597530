"""ufl.progress: plain lines when the stream is not a terminal, each count printed once."""
import io

from ufl.progress import progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_at_most_every_interval_and_a_last_line_once(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("ufl.progress.time.monotonic", clock)
    stream = io.StringIO()
    with progress(100, desc="features", unit="img", stream=stream, interval=10) as bar:
        for _ in range(10):
            clock.now += 3
            bar.update(10)
    lines = stream.getvalue().splitlines()
    # Printed at 12 s and 24 s (40 and 80 images), then once at the end (100 images): no line repeats.
    assert [line.split(" img")[0] for line in lines] == ["features: 40/100", "features: 80/100",
                                                          "features: 100/100"]
    assert "s left" in lines[0] and "s left" not in lines[-1]


def test_last_line_not_repeated_when_the_final_update_just_printed(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("ufl.progress.time.monotonic", clock)
    stream = io.StringIO()
    with progress(2, desc="shards", unit="shard", stream=stream, interval=5) as bar:
        clock.now = 6
        bar.update(2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shards: 2/2 shard")


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    with progress(5, desc="x", stream=stream, enabled=False) as bar:
        bar.update(5)
    assert stream.getvalue() == ""

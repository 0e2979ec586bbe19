"""The `--watch` source on this machine: files landing in a folder, scored as they land, with
each window's figures written when the watermark passes its end, while the job runs.

Beam 2.59's Python runners do not stream an unbounded source on one machine: the DirectRunner
hands it to the FnApiRunner, which reads MatchContinuously to its end before anything
downstream runs (every window's line came when the job ended, all "on time"); the
BundleBasedDirectRunner, the one that streams, fails on any splittable DoFn in streaming
mode (MatchContinuously's PeriodicImpulse: "was not replaced as expected", then
"OffsetRestrictionTracker is not done"); Prism downloads its binary at run time. So this
loop schedules the stream's own steps (serving/stream.py's DoFns, RunInference's handler
and the window CombineFn, called as a runner calls them: start_bundle, process,
finish_bundle), one poll a bundle; what it scores, writes and counts is the Pub/Sub job's.

Event time, as Beam has it:
- the watermark is the start of the last poll whose files have all been read (a file lands
  whole, by rename, as MatchContinuously also needs);
- a window's on-time line is written once the watermark passes its end (so within
  `--interval` and one poll's work of that end);
- an event whose window's end + `--allowed-lateness-seconds` the watermark has passed is
  left out of the figures (still scored, written and counted in the totals);
- a later event within the lateness writes a late line (accumulating), one per poll.
Stopping (`--stop-after`, Ctrl-C, SIGTERM) reads what has landed, then moves the
watermark to the end of time: every open window gets its on-time line.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from serving import stream_steps as stream

log = logging.getLogger("serving.stream")

EVENT_FILES = (".jsonl", ".json", ".csv")


def landed_events(path: Path) -> Iterable[Any]:
    """A landed file's events: JSON lines (text), or CSV rows (dicts of strings)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".csv":
        yield from csv.DictReader(io.StringIO(text))
        return
    for line in text.splitlines():
        if line.strip():
            yield line


FIGURES = stream.WindowFigures()  # the Beam job's CombineFn (it keeps no state of its own)


@dataclass
class _Window:
    figures: list = field(default_factory=FIGURES.create_accumulator)
    panes: int = 0
    late: bool = False  # late events arrived since its last line


@dataclass
class FolderStream:
    folder: Path
    settings: stream.StreamSettings
    out: Path
    interval: float = 1.0
    stop_after: float | None = None
    clock: Callable[[], float] = time.time
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.read: set[str] = set()
        self.watermark = -math.inf
        self.windows: dict[float, _Window] = {}
        self.left_out = 0  # events too late for their window's figures
        self.parse = stream.ParseEvent(s.key_field, s.time_field, str(self.out / stream.TALLY),
                                       stream.served_problem_dir(s.serving_dir))
        self.parse.setup()
        self.handler = stream.RawRowsModelHandler(s.serving_dir, s.poll_seconds, s.max_batch,
                                                  s.config_dir)
        self.model = self.handler.load_model()
        self.model.current()  # the answering version loads (warmup replayed) before any event
        self.rows = stream.PredictionRows()
        self.warehouse = stream.WindowedFiles(str(self.out / "predictions"), "parquet")
        self.request_log = stream.AppendRequestLog(str(self.out / "requests.jsonl"),
                                                   s.model_name)
        self.dead_letters = stream.WindowedFiles(str(self.out / stream.DEAD), "jsonl")
        self.lines = stream.AppendWindowLine(str(self.out / "windows.jsonl"))

    def run(self) -> None:
        """Poll every `interval` until stopped; then read what landed and close every
        window."""
        deadline = self.clock() + self.stop_after if self.stop_after else math.inf
        while True:
            started = self.clock()
            self.poll(started)
            if self.stop.is_set() or started >= deadline:
                break
            self.stop.wait(max(0.0, min(self.interval - (self.clock() - started),
                                        deadline - self.clock())))
        self.advance(math.inf)
        if self.left_out:
            log.warning("%d events came later than their window's end + %ss: scored and "
                        "written, left out of windows.jsonl", self.left_out,
                        self.settings.allowed_lateness_seconds)

    def poll(self, started: float) -> None:
        """Read the files that landed before `started`, score them, then move the watermark
        to `started`."""
        landed = sorted((p for p in self.folder.iterdir()
                         if p.is_file() and p.suffix in EVENT_FILES
                         and not p.name.startswith(".") and str(p) not in self.read),
                        key=lambda p: (p.stat().st_mtime, p.name)) \
            if self.folder.is_dir() else []
        events: list[Any] = []
        for path in landed:
            self.read.add(str(path))
            events.extend(landed_events(path))
        for at in range(0, len(events), self.settings.max_batch):
            self.bundle(events[at:at + self.settings.max_batch], started)
        self.advance(started)

    def bundle(self, events: list[Any], arrived: float) -> None:
        valid, dead = [], []
        self.parse.start_bundle()
        for event in events:
            for out in self.parse.process(event, Timestamp.of(arrived)):
                if isinstance(out, TaggedOutput):
                    dead.append(out.value.value)
                else:
                    valid.append(out.value)
        self.parse.finish_bundle()
        rows = []
        if valid:
            for result in self.handler.run_inference(valid, self.model):
                for row in self.rows.process(result):
                    if isinstance(row, TaggedOutput):
                        dead.append(row.value)
                    else:
                        rows.append(row)
        self.write(self.warehouse, rows)
        self.write(self.request_log, rows, windowed=False)
        self.write(self.dead_letters, dead)
        for kind, items in (("prediction", rows), ("dead", dead)):
            for item in items:
                start = self.window_start(item["event_time"])
                end = start + self.settings.window_seconds
                if end + self.settings.allowed_lateness_seconds <= self.watermark:
                    self.left_out += 1
                    continue
                state = self.windows.setdefault(start, _Window())
                FIGURES.add_input(state.figures, (kind, item.get("probability", 0.0)))
                state.late = state.late or state.panes > 0

    def advance(self, watermark: float) -> None:
        """The watermark moves: each window it passes gets its on-time line, each window
        with new late events a late one; windows past their lateness are forgotten."""
        self.watermark = max(self.watermark, watermark)
        width, lateness = self.settings.window_seconds, self.settings.allowed_lateness_seconds
        for start in sorted(self.windows):
            state, end = self.windows[start], start + width
            if end <= self.watermark and (state.panes == 0 or state.late):
                timing = PaneInfoTiming.ON_TIME if state.panes == 0 else PaneInfoTiming.LATE
                pane = PaneInfo(state.panes == 0, False, timing, state.panes, state.panes)
                figures = FIGURES.extract_output(state.figures)
                for _ in self.lines.process(figures, IntervalWindow(start, end), pane):
                    pass
                state.panes, state.late = state.panes + 1, False
            if end + lateness <= self.watermark:
                del self.windows[start]

    def window_start(self, when: float) -> float:
        width = self.settings.window_seconds
        return math.floor(when / width) * width

    def write(self, sink, items: list[dict], windowed: bool = True) -> None:
        if not items:
            return
        sink.start_bundle()
        for item in items:
            if windowed:
                start = self.window_start(item["event_time"])
                sink.process(item, IntervalWindow(start, start + self.settings.window_seconds))
            else:
                sink.process(item)
        sink.finish_bundle()


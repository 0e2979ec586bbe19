"""The terminal of a local run: one line per component (ran, cached, skipped or failed, its
seconds and its one key figure), live on a terminal while it runs.

It listens to the log records the run already makes: LocalDagRunner's "Component X is
running/finished", the launcher's "A cached execution N is used", and the Trainer's progress
(models/progress.py); the key figure is read from MLMD when a component ends. On a terminal
the running component's line is redrawn by `rich` (the progress library Keras itself
depends on, so nothing new is installed; it also knows when the output is not a terminal);
into a pipe or CI log each component prints one plain line when it ends.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, TextIO

from models import PROGRESS_LOGGER
from reporting import runs
from reporting.run_summary import headline
from settings.quiet import one_line

log = logging.getLogger(__name__)

RUNNING = re.compile(r"^Component (\S+) is running\.$")
FINISHED = re.compile(r"^Component (\S+) is finished\.$")
SKIPPED = re.compile(r"^Skipping component (\S+)\.$")
CACHED = re.compile(r"^A cached execution \d+ is used\.$")
NAME_WIDTH = 30


def key_figure(node: str, outcome: runs.RunSummary, artifacts: list) -> str:
    """The one figure a person wants from `node` as it ends."""
    props = {a.type: a.custom_properties for a in artifacts}
    if "rows_per_split" in props.get("Examples", {}):
        rows = json.loads(props["Examples"]["rows_per_split"].string_value)
        splits = ", ".join(f"{split} {count:,}" for split, count in rows.items())
        by = json.loads(props["Examples"]["split"].string_value).get("by") \
            if "split" in props["Examples"] else None
        how = {"time": "; eval: the newest, by time", "hash": "; a random split",
               "group": "; split by group"}.get(by, "")
        return f"{sum(rows.values()):,} rows ({splits}{how})"
    if node == "LeakageCheck" and outcome.leakage:
        flags = len(outcome.leakage.get("flags", []))
        stops = len(outcome.leakage.get("stops", []))
        return (f"{stops} overlap(s) between train and eval" if stops else "no overlap") + \
            (f", {flags} flag(s)" if flags else ", nothing flagged")
    if node == "AnomalyGate":
        return "no anomalies against the schema"
    if node == "DriftCheck" and outcome.drift:
        breached = outcome.drift.get("breached", [])
        if outcome.drift.get("baseline_span") is None:
            return "nothing to compare with yet"
        return f"{len(breached)} feature(s) drifted" if breached else "no drift"
    if node == "SpanWindow" and outcome.window_spans:
        return "spans " + ", ".join(map(str, outcome.window_spans))
    if node == "Evaluator" and outcome.metrics:
        name = next(iter(headline({k: v for k, v in outcome.metrics.items()
                                   if k != "example_count"})), None)
        value, base = outcome.metrics.get(name), outcome.baseline_metrics.get(name)
        label = "AUC" if name == "auc" else name
        text = f"{label} {value:.4f}" if isinstance(value, (int, float)) else "evaluated"
        text += f" (baseline {base:.4f})" if isinstance(base, (int, float)) else ""
        return text + (", blessed" if outcome.blessed else ", NOT blessed")
    if node == "RefitCheck" and outcome.refit:
        refit = outcome.refit
        rows = ((refit.get("refit") or {}).get("rows") or {}).get("all", 0)
        if refit.get("passed"):
            return (f"refit on {rows:,} rows: within {refit['disagreement']:.3f} of the "
                    "evaluated model, loss "
                    f"{(refit.get('loss') or {}).get('ratio') or 0:.2f}x; goes on")
        return f"refit NOT passed ({'; '.join(refit.get('reasons', []))[:160]}); goes on: " \
            f"{refit.get('pushed')}"
    if node == "SafeToServe" and outcome.safe_to_serve is not None:
        return ("safe: " if outcome.safe_to_serve else "NOT safe: ") + \
            outcome.safe_to_serve_detail
    if node == "Pusher" and outcome.pushed is not None:
        return f"pushed {outcome.pushed_destination}" if outcome.pushed else "not pushed"
    if outcome.batch_predictions:
        return f"{outcome.batch_predictions.get('rows', 0):,} rows scored"
    if outcome.edge_model:
        return "TFLite exported" if outcome.edge_model.get("exported") else "TFLite skipped"
    return ""


class RunConsole(logging.Handler):
    """A logging handler that turns a run's records into the console's lines. Use as a
    context manager around the run; it attaches itself to the root logger."""

    def __init__(self, out: TextIO, metadata_path: str, pipeline_name: str,
                 live: bool | None = None) -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.metadata_path, self.pipeline_name = metadata_path, pipeline_name
        self.live = out.isatty() if live is None else live
        self.node: str | None = None
        self.started = 0.0
        self.cached = False
        self.progress = ""
        self.done: list[tuple[str, str, float, str]] = []  # node, state, seconds, figure
        self._lock = threading.RLock()
        self._display: Any = None
        self._watched: list[tuple[logging.Logger, int]] = []
        self._closed = threading.Event()

    # ------------------------------------------------------------ context

    def __enter__(self) -> RunConsole:
        root = logging.getLogger()
        root.addHandler(self)
        for name in ("absl", PROGRESS_LOGGER):  # the records this console reads
            logger = logging.getLogger(name)
            self._watched.append((logger, logger.level))
        self._keep_listening()
        threading.Thread(target=self._listen, name="console-levels", daemon=True).start()
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._display = Live(console=Console(file=self.out), get_renderable=self._render,
                                 refresh_per_second=4, transient=True,
                                 redirect_stdout=False, redirect_stderr=False)
            self._display.start()
        return self

    def _keep_listening(self) -> None:
        for logger, _ in self._watched:
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)

    def _listen(self) -> None:
        """Components lower absl's verbosity while they run (Transform does); the console
        needs its INFO records, so the level is put back as often as it could change."""
        while not self._closed.wait(0.2):
            self._keep_listening()

    def __exit__(self, kind, error, traceback) -> None:
        self._closed.set()
        with self._lock:
            if self.node is not None:  # the component that was running when the run ended
                self._line(self.node, "FAILED" if error else "stopped",
                           time.monotonic() - self.started,
                           one_line(error) if error is not None else "")
                self.node = None
        if self._display is not None:
            self._display.stop()
        logging.getLogger().removeHandler(self)
        for logger, level in self._watched:
            logger.setLevel(level)

    # ------------------------------------------------------------ records

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name == PROGRESS_LOGGER:
                self.progress = record.getMessage()
                return
            if record.name != "absl":
                return
            message = record.getMessage()
            with self._lock:
                if match := RUNNING.match(message):
                    self.node, self.started = match.group(1), time.monotonic()
                    self.cached, self.progress = False, ""
                elif CACHED.match(message):
                    self.cached = True
                elif match := FINISHED.match(message):
                    self._finish(match.group(1))
                elif match := SKIPPED.match(message):
                    self._line(match.group(1), "skipped", 0.0, "")
        except Exception:  # noqa: BLE001 - a console must never stop a run
            self.handleError(record)

    def _finish(self, node: str) -> None:
        seconds = time.monotonic() - self.started
        state, figure = ("cached" if self.cached else "ran"), ""
        try:
            found = runs.latest_execution(self.metadata_path, self.pipeline_name, node)
            if found is not None:
                state = found[0] if found[0] in ("ran", "cached") else state
                figure = key_figure(node, found[1], found[2])
        except Exception as e:  # noqa: BLE001 - the figure is a nicety; the run goes on
            log.debug("no key figure for %s: %s", node, e)
        if node == "Trainer" and self.progress and not figure:
            figure = self.progress.split(", ", 1)[-1]  # "step 100/100 loss .. val auc .."
        self._line(node, state, seconds, figure)
        self.node = None

    def _line(self, node: str, state: str, seconds: float, figure: str) -> None:
        self.done.append((node, state, seconds, figure))
        text = f"  {node:<{NAME_WIDTH}} {state:<7} {seconds:6.1f} s  {figure}".rstrip()
        if self._display is not None:
            self._display.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.out, flush=True)

    def _render(self):
        from rich.spinner import Spinner
        from rich.text import Text

        with self._lock:
            if self.node is None:
                return Text("")
            seconds = time.monotonic() - self.started
            text = f"{self.node:<{NAME_WIDTH - 2}} running {seconds:6.1f} s"
            if self.progress:
                text += f"  {self.progress}"
        return Spinner("dots", text=Text(text), style="cyan")


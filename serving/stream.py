"""Streaming predictions: the pushed model inside a Beam streaming job, from events to a
warehouse, with nothing lost.

    python -m serving.stream --watch incoming/                 # here: JSONL/CSV files as they land
    python -m serving.stream --pubsub-subscription projects/P/subscriptions/S \\
        --bigquery-table P:dataset.predictions --runner DataflowRunner --project P \\
        --region us-central1 --temp_location gs://B/tmp --sdk_container_image IMAGE

readInstances -> the raw-row contract -> RunInference -> writePredictions:

- **Events** are JSON objects (a Pub/Sub message, a line of a `.jsonl` file) or CSV rows: the
  raw row, flat or under `features`, with an optional `key` and `event_time` (ISO 8601 or
  UNIX seconds; without one, the time the event arrived).
- **The contract** (models/contract.py, the REST server's rules) turns each into the model's
  inputs or refuses it; a refused or malformed event goes to the dead-letter output with the
  reason. Every event ends in exactly one place: counts in = predictions + dead letters.
- **RunInference** with a model handler around the pushed SavedModel's `serving_default`
  signature (15 named tensors: Beam's TF handlers stack one tensor, and load with Keras),
  loaded with `tf.saved_model.load`, the Transform graph inside. The handler's model is the
  version the rollout says answers (serving/answering.py, the server's rule: a pause, the
  bandit, a canary, `stable`, else the newest push), read again every --poll-seconds; a new
  one is loaded whole (its warmup replayed) before it scores, and every output row names
  the version that scored it.
- **Windows** of event time (`--window-seconds`) carry per-window counts, mean prediction and
  dead-letter share (`windows.jsonl`, a line per pane: on time, then one per late firing up to
  `--allowed-lateness-seconds`). Predictions and dead letters are written whatever their
  lateness: only the window figures leave an event later than that out.
- **Sinks**: locally, Parquet files by window under OUT/predictions/ (a warehouse a person
  queries with SQL: `duckdb -c "select version, avg(probability) from
  'OUT/predictions/*/*.parquet' group by 1"`), JSONL dead letters under OUT/dead_letters/, and
  OUT/requests.jsonl in the request log's format, which `python -m monitoring.monitor --log`
  reads as it reads the server's. On Dataflow, BigQuery (streaming inserts): one row per
  event with its inputs, probability, version, event and processing time, and a
  `_dead_letters` table beside it.

Here (`--watch`) the same steps run in an event-time loop of their own
(serving/folder_stream.py; Beam's Python runners do not stream a folder on one machine): a
window's line lands as the watermark passes its end, while the job runs; Ctrl-C or SIGTERM
reads what has landed, closes every window and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.transforms import trigger, window

from models import problem as P
from serving.stream_steps import (  # noqa: F401 - also what `serving.stream` has named so far
    DEAD,
    NAMESPACE,
    TALLY,
    VALID,
    AppendRequestLog,
    AppendWindowLine,
    ParseEvent,
    PredictionRows,
    RawRowsModelHandler,
    RolloutVersions,
    StreamSettings,
    WindowedFiles,
    WindowFigures,
    parse_time,
    served_problem_dir,
)

log = logging.getLogger("serving.stream")

# ---------------------------------------------------------------- the job


def score(events: beam.PCollection, settings: StreamSettings, tally: str = ""
          ) -> tuple[beam.PCollection, beam.PCollection]:
    """Events -> (prediction rows, dead letters), both in event-time windows; `tally`: a
    file the events read are counted in (local runs)."""
    parsed = events | "Contract" >> beam.ParDo(
        ParseEvent(settings.key_field, settings.time_field, tally,
                   served_problem_dir(settings.serving_dir))).with_outputs(DEAD, main=VALID)
    windowing = window.FixedWindows(settings.window_seconds)
    lateness = settings.allowed_lateness_seconds
    valid = parsed[VALID] | "Windows" >> beam.WindowInto(
        windowing, allowed_lateness=lateness)
    dead = parsed[DEAD] | "DeadWindows" >> beam.WindowInto(windowing, allowed_lateness=lateness)
    scored = (valid
              | "RunInference" >> RunInference(RawRowsModelHandler(
                  settings.serving_dir, settings.poll_seconds, settings.max_batch,
                  settings.config_dir))
              | "Rows" >> beam.ParDo(PredictionRows()).with_outputs(DEAD, main=VALID))
    refused = scored[DEAD] | "RefusedWindows" >> beam.WindowInto(windowing,
                                                                 allowed_lateness=lateness)
    return scored[VALID], (dead, refused) | "AllDeadLetters" >> beam.Flatten()


def window_figures(rows: beam.PCollection, dead: beam.PCollection,
                   settings: StreamSettings) -> beam.PCollection:
    """Per window and pane: counts, mean prediction, dead-letter share; a pane when the
    watermark passes the window's end, then one per late event within the lateness."""
    kinds = ((rows | "AsPrediction" >> beam.Map(lambda r: ("prediction", r["probability"])),
              dead | "AsDead" >> beam.Map(lambda d: ("dead", 0.0)))
             | "Together" >> beam.Flatten())
    return (kinds
            | "Panes" >> beam.WindowInto(
                window.FixedWindows(settings.window_seconds),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=settings.allowed_lateness_seconds)
            | "Figures" >> beam.CombineGlobally(WindowFigures()).without_defaults())


def local_sinks(rows, dead, figures_in, out: str, model_name: str) -> None:
    _ = rows | "Warehouse" >> beam.ParDo(WindowedFiles(f"{out}/predictions", "parquet"))
    _ = rows | "RequestLog" >> beam.ParDo(AppendRequestLog(f"{out}/requests.jsonl",
                                                           model_name))
    _ = dead | "DeadLetters" >> beam.ParDo(WindowedFiles(f"{out}/{DEAD}", "jsonl"))
    _ = figures_in | "WindowLines" >> beam.ParDo(AppendWindowLine(f"{out}/windows.jsonl"))


PREDICTION_SCHEMA = ("key:STRING,event_time:TIMESTAMP,processing_time:TIMESTAMP,"
                     "version:INTEGER,paused:STRING,probability:FLOAT,features:STRING")
DEAD_SCHEMA = "event:STRING,reason:STRING,event_time:TIMESTAMP"


def bigquery_sinks(rows, dead, table: str) -> None:
    """Streaming inserts: predictions into TABLE, dead letters into TABLE_dead_letters."""
    from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery

    for name, pcoll, schema, target in (("Predictions", rows, PREDICTION_SCHEMA, table),
                                        ("DeadLetters", dead, DEAD_SCHEMA,
                                         f"{table}_{DEAD}")):
        _ = pcoll | f"BigQuery{name}" >> WriteToBigQuery(
            target, schema=schema, method=WriteToBigQuery.Method.STREAMING_INSERTS,
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=BigQueryDisposition.WRITE_APPEND)


def pubsub_messages(pipeline, subscription: str, topic: str, time_attribute: str):
    kwargs = {"subscription": subscription} if subscription else {"topic": topic}
    if time_attribute:
        kwargs["timestamp_attribute"] = time_attribute
    return (pipeline | "PubSub" >> beam.io.ReadFromPubSub(**kwargs)
            | "Decode" >> beam.Map(lambda b: b.decode("utf-8", "replace")))


def build(pipeline, args: argparse.Namespace, settings: StreamSettings) -> None:
    """The Pub/Sub job's graph (the --watch source runs in serving/folder_stream.py)."""
    events = pubsub_messages(pipeline, args.pubsub_subscription, args.pubsub_topic,
                             args.pubsub_time_attribute)
    rows, dead = score(events, settings, "" if args.bigquery_table else f"{args.out}/{TALLY}")
    figures = window_figures(rows, dead, settings)
    if args.bigquery_table:
        bigquery_sinks(rows, dead, args.bigquery_table)
        _ = figures | "WindowFigures" >> beam.Map(lambda f: log.info("window %s", f))
    else:
        local_sinks(rows, dead, figures, args.out, settings.model_name)


def counts(out: str) -> dict[str, int]:
    """Events read, and what landed: rows in the warehouse, dead letters. On Dataflow the
    job's counters (namespace `stream`) say the same in its console."""
    folder = Path(out)
    tally = folder / TALLY
    events = sum(json.loads(line)["events"] for line in tally.read_text().splitlines()) \
        if tally.is_file() else 0
    import pyarrow.parquet as pq

    predictions = sum(pq.ParquetFile(f).metadata.num_rows
                      for f in folder.glob("predictions/window=*/*.parquet"))
    dead = sum(len(f.read_text().splitlines()) for f in folder.glob(f"{DEAD}/window=*/*.jsonl"))
    return {"events": events, "predictions": predictions, "dead_letters": dead}


def parser(defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--watch", help="a folder whose new .jsonl/.csv files are read as they "
                                        "land (the local source; each window's line is "
                                        "written as the watermark passes its end)")
    source.add_argument("--pubsub-subscription", help="projects/P/subscriptions/S (Dataflow)")
    source.add_argument("--pubsub-topic", help="projects/P/topics/T (Dataflow)")
    parser.add_argument("--pubsub-time-attribute", default="",
                        help="the message attribute that holds the event time (else the "
                             "event's own --time-field, else the publish time)")
    parser.add_argument("--bigquery-table", default="",
                        help="PROJECT:DATASET.TABLE for predictions (and TABLE_dead_letters); "
                             "empty: the local sinks under --out")
    parser.add_argument("--out", default=f"{defaults.output_root}/stream/{defaults.pipeline_name}",
                        help="local sinks: predictions/ (Parquet by window), dead_letters/, "
                             "requests.jsonl, windows.jsonl")
    parser.add_argument("--serving-dir", default=defaults.serving_dir,
                        help="the Pusher's versions (local or gs://): the newest scores")
    parser.add_argument("--config-dir", default=defaults.serving_config_dir,
                        help="serving.rollout's config dir: a pause there is honoured")
    parser.add_argument("--window-seconds", type=int, default=60,
                        help="fixed windows of event time, a line each in windows.jsonl")
    parser.add_argument("--allowed-lateness-seconds", type=int, default=300,
                        help="events later than their window's end + this are scored and "
                             "written but left out of the window's figures")
    parser.add_argument("--poll-seconds", type=float, default=10.0,
                        help="how often to look for a newer pushed version")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="--watch: how often to look for new files (seconds)")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="--watch: stop after this many seconds (default: never; Ctrl-C "
                             "or SIGTERM stops it, with the summary)")
    parser.add_argument("--key-field", default="key")
    parser.add_argument("--time-field", default="event_time")
    return parser


def main(argv: list[str] | None = None) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from settings import quiet
    from settings.layout import Layout

    defaults = Layout.load()
    command = parser(defaults)
    quiet.add_arguments(command)
    args, beam_args = command.parse_known_args(argv)
    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    settings = StreamSettings(args.serving_dir, defaults.serving_model_name,
                              args.window_seconds, args.allowed_lateness_seconds,
                              args.poll_seconds, args.key_field, args.time_field,
                              config_dir=args.config_dir)
    if not args.bigquery_table and not Path(args.serving_dir).is_dir():
        print(f"serving.stream: no pushed model under {args.serving_dir}: run the pipeline "
              "first (make run)", file=sys.stderr)
        return 2
    if args.bigquery_table and "://" not in (args.config_dir or ""):
        print(f"serving.stream: a Dataflow job's workers cannot read --config-dir "
              f"{args.config_dir or '(none)'} on this machine, so a pause or a rollback would "
              "never reach them: give the rollout's folder in Cloud Storage (--config-dir "
              "gs://BUCKET/PATH, as serving.rollout --config-dir writes it)", file=sys.stderr)
        return 2
    from serving import versions

    pushed = versions.pushed_versions(Path(args.serving_dir)) \
        if Path(args.serving_dir).is_dir() else []
    problem = P.from_model(str(Path(args.serving_dir) / str(pushed[-1]))) if pushed else None
    try:
        P.binary_only("the stream's warehouse rows (one probability per event)", problem)
    except P.ProblemError as e:
        print(f"serving.stream: {e}", file=sys.stderr)
        return 2

    if args.watch and beam_args:
        print(f"serving.stream: {' '.join(beam_args)}: Beam's options are for the Pub/Sub "
              "job; --watch runs on this machine", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def work():
        if args.watch:
            from serving.folder_stream import FolderStream

            job = FolderStream(Path(args.watch), settings, Path(args.out), args.interval,
                               args.stop_after, stop=stopping)
            job.run()
            return counts(args.out)
        pipeline = beam.Pipeline(options=options)
        build(pipeline, args, settings)
        pipeline.run().wait_until_finish()
        return counts(args.out) if not args.bigquery_table else None

    def drain(signum, _frame):
        """Ctrl-C or SIGTERM: read what has landed, close every window, print the summary;
        a second Ctrl-C stops at once."""
        log.warning("%s: reading what has landed and closing the windows (Ctrl-C again "
                    "stops at once)", signal.Signals(signum).name)
        stopping.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if args.watch:
        signal.signal(signal.SIGINT, drain)
        signal.signal(signal.SIGTERM, drain)
    where = args.bigquery_table or args.out
    print(f"serving.stream: {args.watch or args.pubsub_subscription or args.pubsub_topic} -> "
          f"{where}; Ctrl-C stops it", flush=True)
    found, error, log_file = quiet.run_quietly(work, args, defaults.output_root, "stream",
                                               ("serving.stream",), "%(asctime)s %(message)s",
                                               (FileNotFoundError, ValueError))
    if error is not None:
        print(f"serving.stream: {error}", file=sys.stderr)
        return 2
    if found is None:
        print(f"serving.stream: the job ended; logs: {log_file}")
        return 0
    balanced = found["events"] == found["predictions"] + found["dead_letters"]
    print(f"serving.stream: {found['events']} events in {'=' if balanced else '!='} "
          f"{found['predictions']} predictions + {found['dead_letters']} dead letters in "
          f"{args.out}; logs: {log_file}")
    return 0 if balanced else 1


if __name__ == "__main__":
    sys.exit(main())

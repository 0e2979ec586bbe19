"""The pipeline's settings: one object every component of the DAG reads, on top of the
layout every command shares (settings/layout.py), with profiles for local, Vertex and
Kubeflow runs. Precedence and the flag/variable machinery: settings/framework.py.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from models import problem as P
from settings.framework import ENV_PREFIX, ConfigError, how_to_set, setting
from settings.layout import BUNDLED_DATA_DIR, Layout

__all__ = ["ENV_PREFIX", "ConfigError", "PipelineConfig", "add_arguments", "from_args", "load"]

RUNNING_MODES = ("auto", "in_memory", "multi_threading", "multi_processing")
PREDICTION_FORMATS = ("parquet", "csv")
REFIT_FALLBACKS = ("nothing", "evaluated")  # what is pushed when RefitCheck fails
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "parameter_server")
DRIFT_ACTIONS = ("stop", "warn")
MATERIALIZE = ("auto", "yes", "no")
RESTART_JOB = ("auto", "yes", "no")
EXAMPLE_GENS = ("arrow", "tfx-csv")
DELIMITERS = ("", ",", ";", "tab", "|")


@dataclass
class PipelineConfig(Layout):
    """Everything a run of the DAG needs. Paths may be local directories or gs:// URIs."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {},
        "vertex": {**Layout.PROFILES["vertex"], "data_root": "", "report_in_pipeline": True},
        # Open-source Kubeflow Pipelines on any cluster: the same image and DAG, with the
        # Trainer in its task's pod, the Pusher writing to SERVING_DIR (an object store or
        # volume the cluster's TF Serving reads) and the served model as baseline.
        "kubeflow": {**Layout.PROFILES["kubeflow"], "data_root": "",
                     "report_in_pipeline": True},
    }
    PATH_FIELDS: ClassVar[tuple[str, ...]] = (*Layout.PATH_FIELDS, "data_root",
                                              "inference_data_root")
    SECTIONS: ClassVar[dict[str, str]] = {
        **Layout.SECTIONS, "data_root": "the data (ExampleGen, spans)",
        "analyzer_cache": "Transform and drift", "split_by": "the eval split",
        "enable_tuning": "Tuner and Trainer", "min_auc": "Evaluator and approval",
        "safe_to_serve": "safe to serve", "inference_data_root": "batch predictions",
        "export_tflite": "edge export and the run report", "beam_direct_running_mode": "Beam",
        "gcp_project": "Google Cloud"}
    # Read only by the job vertex_runner.py compiles (the project and temp location also
    # serve BigQuery input here): left out of local_runner.py --help.
    CLOUD_ONLY: ClassVar[tuple[str, ...]] = (
        "gcp_region", "image", "service_account", "dataflow_machine_type",
        "dataflow_max_workers", "training_machine_type", "training_workers",
        "training_parameter_servers", "training_spot", "training_restart_job",
        "training_timeout_hours", "training_accelerator_type", "training_accelerator_count",
        "tuner_parallel_trials", "serving_endpoint", "serving_traffic_percent",
        "serving_machine_type", "serving_image", "report_in_pipeline")

    data_root: str = setting(str(BUNDLED_DATA_DIR), "directory of CSV files ExampleGen reads")

    # ExampleGen and spans
    input_pattern: str = setting("", "files under DATA_ROOT that ExampleGen reads; `span-{SPAN}/*` "
                                     "reads time spans (default: every file, as span 0)")
    example_gen: str = setting("arrow", "arrow: CSV as Excel, R, pandas or a warehouse writes "
                                        "it (quoted, BOM, ;/tab, .gz/.bz2/.zst) and Parquet, "
                                        "typed by the schema | tfx-csv: TFX's CsvExampleGen "
                                        "(plain UTF-8 CSV only), for comparison")
    csv_delimiter: str = setting("", "CSV delimiter: , ; tab | (default: detected from each "
                                     "file's header line)")
    input_block_mb: int = setting(64, "a file larger than this is read in blocks of about "
                                      "this size, which Beam's workers share (0: each file "
                                      "whole, e.g. for CSV with quotes inside unquoted fields)")
    bigquery_query: str = setting("", "read the rows with this BigQuery SQL instead of files "
                                      "(BigQueryExampleGen); TFX's @span_begin_timestamp, "
                                      "@span_end_timestamp, @span_yyyymmdd_utc make span N the "
                                      "Nth day since 1970-01-01 (needs --span N); README: "
                                      "'Data from BigQuery'")
    span: int = setting(-1, "with a {SPAN} pattern or a span query: the span to ingest "
                            "(-1 = the newest file span)")
    training_spans: int = setting(3, "rolling window: train on the newest K ingested spans; "
                                     "evaluate on the newest")
    recency_half_life: float = setting(0.0, "example weights halve every this many spans back "
                                            "from the newest (0 = equal weights)")
    analyzer_cache: bool = setting(False, "with spans: Transform reads each older span's "
                                          "analyzer results from the last run's cache instead "
                                          "of analysing it again (its extra stages cost more "
                                          "than they save at 100k-300k rows a span: "
                                          "benchmarks/README.md)")
    transform_materialize: str = setting(
        "auto", "yes: Transform writes every transformed row for the Tuner and Trainer | no: "
                "they read the raw rows and run the same Transform graph on each batch as "
                "they read it (skips writing the rows: half of Transform's time at 1M rows) "
                "| auto: no on the local profile; yes elsewhere, where Dataflow's workers "
                "transform in parallel and the training machine only trains")
    drift_action: str = setting("stop", "what a drift breach does: "
                                        "stop (before Transform) | warn")
    split_by: str = setting(
        "auto", "how the eval rows are chosen: time: the newest rows by TIME_COLUMN, what the "
                "model meets next (train: the rows before) | hash: a random sample of the same "
                "period (with PARTITION_FEATURE: whole groups) | auto: time with example_gen "
                "arrow and a time column, hash otherwise")
    time_column: str = setting("", "split by time: this column (default: the problem's time "
                                   "column)")
    eval_fraction: float = setting(0.25, "split by time: the newest this share of the rows is "
                                         "the eval split")
    eval_days: float = setting(0.0, "split by time: the newest this many days are the eval "
                                    "split instead (0: EVAL_FRACTION decides)")
    eval_gap_days: float = setting(0.0, "split by time: rows this many days before the eval "
                                        "period are in neither split (labels that come late)")
    leakage_max_single_auc: float = setting(
        0.99, "the data gate flags a column whose values alone predict the label with a "
              "higher AUC on the eval split: likely leakage")
    in_time_holdout: float = setting(
        0.1, "split by time: a random share of the training period that the Trainer holds "
             "out, so the report shows the random-split AUC beside the out-of-time one "
             "(0: none, train on all of it)")
    train_buckets: int = setting(3, "split by hash: hash buckets for the train split")
    eval_buckets: int = setting(1, "split by hash: hash buckets for the eval split")
    partition_feature: str = setting("", "split by hash of this column, so rows sharing a "
                                         "value (a customer, a driver) are never on both "
                                         "sides; the data gate checks it")

    # Tuner / Trainer
    enable_tuning: bool = setting(False, "run the KerasTuner search before training")
    tuner_trials: int = setting(6, "tuner trials")
    tuner_steps: int = setting(400, "training steps per tuner trial")
    train_steps: int = setting(500, "Trainer steps")
    eval_steps: int = setting(20, "validation batches per round during training")
    hparams: dict = setting({}, "JSON of hyperparameter overrides, "
                                "e.g. '{\"learning_rate\": 0.001}'")
    seed: int = setting(42, "random seed for training")
    warm_start: bool = setting(False, "start training from the last blessed model's weights "
                                      "(embeddings remapped to the new vocabularies)")
    distribution: str = setting("auto", "tf.distribute strategy of the Trainer: "
                                        + "|".join(DISTRIBUTIONS) + "; auto reads TF_CONFIG's "
                                        "cluster, then the local GPUs (models/distribution.py)")
    backup_every_steps: int = setting(
        100, "back up the Trainer's state (weights, optimizer, step) every N steps under "
             "PIPELINE_ROOT/Trainer/backups, so a Trainer or replica started again resumes "
             "there instead of step 0 (0: off; under parameter servers: every round)")
    backup_every_seconds: float = setting(
        0.0, "back up every N seconds as well (one training process only: the replicas of a "
             "cluster must back up at the same step)")

    # Evaluator
    min_auc: float = setting(-1.0, "blessing needs eval AUC >= this (-1: the problem's "
                                   "blessing threshold; binary problems only)")
    max_auc_drop: float = setting(-1.0, "blessing needs AUC >= baseline AUC - this (-1: the "
                                        "problem's max_change)")
    slices: tuple = setting((), "comma-separated slice features (default: the problem's)")

    require_approval: bool = setting(False, "push a blessed model only once a person approves "
                                            "it by its fingerprint (python -m tools.approval); "
                                            "until then the run ends waiting for approval")

    # The refit after the blessing: the recipe on every row (components/refit_check.py)
    refit: bool = setting(True, "once blessed, retrain on every row (eval's too); push it if "
                                "RefitCheck passes")
    refit_max_disagreement: float = setting(0.25, "RefitCheck: max mean answer gap")
    refit_max_loss_factor: float = setting(1.5, "RefitCheck: max loss ratio, either way")
    refit_fallback: str = setting("nothing", "if it fails: " + "|".join(REFIT_FALLBACKS))

    # Safe to serve (between Evaluator and Pusher) and serving
    safe_to_serve: bool = setting(True, "before pushing, load the candidate in a separate process, "
                                        "replay warmup requests and check the budgets below")
    warmup_requests: int = setting(32, "single-row requests built from eval rows: replayed by "
                                       "the check and shipped as TF Serving warmup")
    latency_p99_budget_ms: float = setting(50.0, "safe to serve: single-row p99 latency budget")
    memory_budget_mib: float = setting(2048.0, "safe to serve: peak RSS budget of the process "
                                               "serving the model")

    # Batch (static) inference: BulkInferrer scores unlabelled rows with the blessed candidate
    inference_data_root: str = setting("", "directory of unlabelled CSV files scored in batch "
                                           "by the blessed model (empty: no batch inference)")
    inference_key: str = setting("", "column passed through with each prediction so it joins "
                                     "back to its row (empty: every input column)")
    predictions_format: str = setting("parquet", "|".join(PREDICTION_FORMATS))
    predictions_bigquery_table: str = setting("", "[vertex] project.dataset.table the batch "
                                                  "predictions are appended to")

    # Edge: the blessed candidate as TFLite (float and quantized), checked on the eval split
    export_tflite: bool = setting(False, "export the blessed model as TFLite (Transform graph "
                                         "inside) and compare it with the SavedModel")
    tflite_max_auc_loss: float = setting(0.005, "the export fails when the quantized model's "
                                                "eval AUC is lower than the SavedModel's by more")

    # The run report: locally the runner writes it from MLMD after the run
    report_in_pipeline: bool = setting(False, "also write the run report from inside the "
                                              "DAG (RunReport, after the Pusher); on by "
                                              "default on Vertex, where no MLMD file is local")

    # Beam
    beam_direct_running_mode: str = setting(
        "auto", "|".join(RUNNING_MODES) + "; auto: in_memory for small input, "
        "multi_processing from BEAM_MULTI_PROCESSING_MIN_MB (benchmarks/README.md)")
    beam_multi_processing_min_mb: float = setting(
        40.0, "auto: input size (MB of the files one run ingests) from which Beam runs one "
              "worker process per core")
    beam_num_workers: int = setting(0, "Beam direct workers (0 = one per core)")
    enable_cache: bool = setting(True, "reuse results of unchanged components")

    # Vertex AI (profile `vertex`): where it runs, and on what.
    gcp_project: str = setting("", "[vertex] GCP project id")
    gcp_region: str = setting("", "[vertex] region of the pipeline, jobs and endpoint, "
                                  "e.g. us-central1")
    image: str = setting("", "[vertex] pipeline container image (see Dockerfile)")
    service_account: str = setting("", "[vertex] service account the pipeline runs as")
    dataflow_temp_location: str = setting("", "[vertex] gs:// temp dir for Dataflow "
                                              "(default PIPELINE_ROOT/tmp)")
    dataflow_machine_type: str = setting("n1-standard-4", "[vertex] Dataflow worker type")
    dataflow_max_workers: int = setting(10, "[vertex] Dataflow autoscaling cap")
    training_machine_type: str = setting("n1-standard-4",
                                         "[vertex] Vertex Training machine (Trainer, Tuner)")
    training_workers: int = setting(0, "[vertex] Trainer replicas beside the primary one "
                                       "(worker pool 1): synchronous multi-worker training")
    training_parameter_servers: int = setting(0, "[vertex] parameter servers (worker pool 2); "
                                                 "needs TRAINING_WORKERS >= 1")
    training_spot: bool = setting(False, "[vertex] Trainer and Tuner jobs on Spot VMs "
                                         "(scheduling strategy SPOT): cheaper, may be reclaimed; "
                                         "a reclaimed replica restarts and resumes from the "
                                         "last backup (BACKUP_EVERY_STEPS)")
    training_restart_job: str = setting(
        "auto", "[vertex] " + "|".join(RESTART_JOB) + ": when one replica of the Trainer's job "
                "restarts, restart them all (restartJobOnWorkerRestart); auto: yes under "
                "multi-worker training (a lost worker stops every collective), no otherwise")
    training_timeout_hours: float = setting(0.0, "[vertex] end a training job that runs longer "
                                                 "(0: Vertex's default, 7 days)")
    training_accelerator_type: str = setting("", "[vertex] e.g. NVIDIA_TESLA_T4 (none if empty)")
    training_accelerator_count: int = setting(0, "[vertex] accelerators per replica")
    tuner_parallel_trials: int = setting(2, "[vertex] tuner trials run in parallel")
    serving_endpoint: str = setting("", "[vertex] Vertex endpoint to deploy to; empty: push to "
                                        "SERVING_DIR (gs://) for TF Serving on GKE")
    serving_traffic_percent: int = setting(100, "[vertex] endpoint traffic for the new model")
    serving_machine_type: str = setting("n1-standard-2", "[vertex] endpoint machine type")
    serving_image: str = setting(
        "", "[vertex] prediction container for the endpoint (default: the newest TensorFlow "
            "CPU image google-cloud-aiplatform lists, in the region's multi-region)")

    def derive(self) -> None:
        super().derive()
        problem = self.problem()
        self.time_column = self.time_column or problem.time_column
        self.slices = tuple(self.slices) or problem.slices
        if problem.blessing.metric == "auc":
            self.min_auc = problem.blessing.threshold if self.min_auc < 0 else self.min_auc
            self.max_auc_drop = problem.blessing.max_change if self.max_auc_drop < 0 \
                else self.max_auc_drop
        if self.profile == "vertex" and self.output_root:
            self.dataflow_temp_location = (self.dataflow_temp_location
                                           or f"{self.output_root.rstrip('/')}/tmp")
        if self.profile == "vertex" and not self.serving_image:
            from serving.vertex_images import default_serving_image

            self.serving_image = default_serving_image(self.gcp_region)

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.train_buckets < 1 or self.eval_buckets < 1:
            problems.append("train_buckets and eval_buckets must be >= 1")
        problems += split_problems(self)
        if self.train_steps < 1:
            problems.append("train_steps must be >= 1")
        if self.problem().blessing.metric == "auc" and not 0.0 <= self.min_auc <= 1.0:
            problems.append("min_auc must be in [0, 1]")
        if self.problem().blessing.metric == "auc" and self.max_auc_drop < 0:
            problems.append("max_auc_drop must be >= 0")
        if self.warmup_requests < 1:
            problems.append("warmup_requests must be >= 1")
        if self.latency_p99_budget_ms <= 0 or self.memory_budget_mib <= 0:
            problems.append("latency_p99_budget_ms and memory_budget_mib must be > 0")
        if self.training_spans < 1:
            problems.append("training_spans must be >= 1")
        if self.recency_half_life < 0:
            problems.append("recency_half_life must be >= 0 (0 = off)")
        if self.bigquery_query:
            problems += bigquery_problems(self)
        if self.example_gen not in EXAMPLE_GENS:
            problems.append(f"example_gen must be one of {', '.join(EXAMPLE_GENS)}")
        if self.csv_delimiter not in DELIMITERS:
            problems.append("csv_delimiter must be one of , ; tab | (or empty: detected)")
        if self.input_block_mb < 0:
            problems.append("input_block_mb must be >= 0 (0 = every file whole)")
        if self.csv_delimiter and self.example_gen != "arrow":
            problems.append("csv_delimiter needs example_gen arrow (CsvExampleGen reads commas)")
        if self.drift_action not in DRIFT_ACTIONS:
            problems.append(f"drift_action must be one of {', '.join(DRIFT_ACTIONS)}")
        if self.predictions_format not in PREDICTION_FORMATS:
            problems.append(f"predictions_format must be one of {', '.join(PREDICTION_FORMATS)}")
        if self.predictions_bigquery_table and \
                len(self.predictions_bigquery_table.split(".")) != 3:
            problems.append("predictions_bigquery_table must be project.dataset.table")
        if not 0.0 <= self.tflite_max_auc_loss <= 1.0:
            problems.append("tflite_max_auc_loss must be in [0, 1]")
        if self.refit_fallback not in REFIT_FALLBACKS:
            problems.append(f"refit_fallback must be one of {', '.join(REFIT_FALLBACKS)}")
        if self.refit_max_disagreement <= 0 or self.refit_max_loss_factor < 1:
            problems.append("refit_max_disagreement must be > 0 and refit_max_loss_factor "
                            ">= 1")
        if self.beam_multi_processing_min_mb < 0:
            problems.append("beam_multi_processing_min_mb must be >= 0")
        if self.distribution not in DISTRIBUTIONS:
            problems.append(f"distribution must be one of {', '.join(DISTRIBUTIONS)} "
                            f"({how_to_set('distribution')})")
        if self.backup_every_steps < 0 or self.backup_every_seconds < 0:
            problems.append("backup_every_steps and backup_every_seconds must be >= 0 (0: off)")
        if self.training_restart_job not in RESTART_JOB:
            problems.append(f"training_restart_job must be one of {', '.join(RESTART_JOB)}")
        if self.training_timeout_hours < 0:
            problems.append("training_timeout_hours must be >= 0 (0: Vertex's default)")
        if self.training_workers < 0 or self.training_parameter_servers < 0:
            problems.append("training_workers and training_parameter_servers must be >= 0")
        if self.transform_materialize not in MATERIALIZE:
            problems.append(f"transform_materialize must be one of {', '.join(MATERIALIZE)}")
        if self.beam_direct_running_mode not in RUNNING_MODES:
            problems.append(f"beam_direct_running_mode must be one of {', '.join(RUNNING_MODES)}")
        if self.profile == "vertex":
            problems += vertex_problems(self)
        if self.profile == "kubeflow":
            problems += kubeflow_problems(self)
        return problems

    @property
    def beam_pipeline_args(self) -> list[str]:
        if self.profile == "vertex":  # data-heavy components run on Dataflow
            return [
                "--runner=DataflowRunner",
                f"--project={self.gcp_project}",
                f"--region={self.gcp_region}",
                f"--temp_location={self.dataflow_temp_location}",
                f"--machine_type={self.dataflow_machine_type}",
                f"--max_num_workers={self.dataflow_max_workers}",
                "--experiments=use_runner_v2",
                f"--sdk_container_image={self.image}",
            ] + ([f"--service_account_email={self.service_account}"]
                 if self.service_account else [])
        mode, _ = self.running_mode()
        # in_memory runs on one worker; asking it for more only earns a Beam warning.
        workers = 1 if mode == "in_memory" else self.beam_num_workers
        bigquery = [f"--project={self.gcp_project}",
                    f"--temp_location={self.dataflow_temp_location}"] \
            if self.bigquery_query else []
        return [
            "--runner=DirectRunner",
            f"--direct_running_mode={mode}",
            f"--direct_num_workers={workers}",
        ] + bigquery

    def problem(self) -> P.Problem:
        """The problem this run solves (PROBLEM_DIR's problem.yaml), made the active one."""
        cached = self.__dict__.get("_problem")
        if cached is None or cached.directory != os.path.abspath(self.problem_dir) \
                and "://" not in self.problem_dir:
            try:
                cached = P.load(self.problem_dir)
            except P.ProblemError as e:
                raise ConfigError(str(e)) from None
            self.__dict__["_problem"] = cached
        return P.activate(cached)

    def blessing(self) -> P.Blessing:
        """The problem's blessing, with --min-auc / --max-auc-drop where they apply."""
        blessing = self.problem().blessing
        if blessing.metric == "auc":
            return P.Blessing("auc", self.min_auc, self.max_auc_drop, True)
        return blessing

    def split_method(self) -> str:
        """time, hash or group (hash of PARTITION_FEATURE): see `split_by`."""
        if self.partition_feature:
            return "group"
        if self.split_by == "auto":
            return "time" if self.example_gen == "arrow" and not self.bigquery_query \
                and self.time_column else "hash"
        return self.split_by

    def backs_up(self) -> bool:
        return bool(self.backup_every_steps or self.backup_every_seconds)

    def restarts_whole_job(self) -> bool:
        """Whether Vertex restarts every replica of the Trainer's job when one restarts (see
        `training_restart_job`): under multi-worker training a lost worker fails the others'
        collectives, so they must all start again from the backup; parameter servers' workers
        come and go on their own."""
        if self.training_restart_job != "auto":
            return self.training_restart_job == "yes"
        return bool(self.training_workers and not self.training_parameter_servers
                    and self.distribution in ("auto", "multi_worker"))

    def materializes(self) -> bool:
        """Whether Transform writes the transformed rows (see `transform_materialize`)."""
        if self.transform_materialize == "auto":
            return self.profile != "local"
        return self.transform_materialize == "yes"

    def running_mode(self) -> tuple[str, str]:
        """Beam's direct running mode, and why. Worker processes cost start-up and a copy of
        the model each; they pay only once there is enough data to share out."""
        if self.beam_direct_running_mode != "auto":
            return self.beam_direct_running_mode, "set"
        size = input_bytes(self)
        if size is None:
            return "in_memory", "input size unknown"
        mb, limit = size / 1e6, self.beam_multi_processing_min_mb
        if (os.cpu_count() or 1) > 1 and mb >= limit:
            return "multi_processing", f"auto: {mb:,.0f} MB of input >= {limit:g} MB"
        return "in_memory", f"auto: {mb:,.1f} MB of input < {limit:g} MB"


def input_glob(config: PipelineConfig) -> str:
    """INPUT_PATTERN as a glob under DATA_ROOT: every span and version."""
    return (config.input_pattern or "*").replace("{SPAN}", "*").replace("{VERSION}", "*")


def input_bytes(config: PipelineConfig) -> int | None:
    """Bytes of the files one run ingests: every file under DATA_ROOT, or with a {SPAN}
    pattern the chosen span's (the newest by default). None for remote data."""
    root = Path(config.data_root)
    if "://" in config.data_root or not root.is_dir():
        return None
    pattern = config.input_pattern or "*"
    files = [p for p in root.glob(input_glob(config)) if p.is_file()]
    if "{SPAN}" in pattern:
        regex = re.compile(re.escape(pattern).replace(r"\{SPAN\}", r"(\d+)")
                           .replace(r"\{VERSION\}", r"\d+").replace(r"\*", "[^/]*"))
        by_span: dict[int, list[Path]] = {}
        for path in files:
            match = regex.fullmatch(path.relative_to(root).as_posix())
            if match:
                by_span.setdefault(int(match.group(1)), []).append(path)
        span = config.span if config.span >= 0 else max(by_span, default=-1)
        files = by_span.get(span, [])
    return sum(p.stat().st_size for p in files)


GCS_URI = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/|$)")
REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")


SPLITS = ("auto", "time", "hash")


def split_problems(config: PipelineConfig) -> list[str]:
    """A split the chosen ExampleGen can make, with sane cuts."""
    problems = []
    if config.split_by not in SPLITS:
        return [f"split_by must be one of {', '.join(SPLITS)} ({how_to_set('split_by')})"]
    if config.split_by == "time" and not config.time_column:
        problems.append("split_by time needs a time column: the problem names none "
                        f"(`time:` in problem.yaml, or {how_to_set('time_column')})")
    if config.split_by == "time" and config.partition_feature:
        problems.append("split_by time and partition_feature are two splits: give one "
                        f"({how_to_set('split_by')})")
    elif config.split_by == "time" and (config.example_gen != "arrow" or config.bigquery_query):
        problems.append("split_by time needs example_gen arrow: TFX's CsvExampleGen and "
                        "BigQueryExampleGen split by hash only (--split-by hash, or for "
                        "BigQuery put the time cut in the query)")
    if not 0.0 < config.eval_fraction < 1.0:
        problems.append(f"eval_fraction must be in (0, 1) ({how_to_set('eval_fraction')})")
    if config.eval_days < 0 or config.eval_gap_days < 0:
        problems.append("eval_days and eval_gap_days must be >= 0")
    if not 0.0 <= config.in_time_holdout <= 0.5:
        problems.append(f"in_time_holdout must be in [0, 0.5] ({how_to_set('in_time_holdout')})")
    return problems


SPAN_PLACEHOLDERS = ("@span_begin_timestamp", "@span_end_timestamp", "@span_yyyymmdd_utc")


def query_has_span(config: PipelineConfig) -> bool:
    return any(p in config.bigquery_query for p in SPAN_PLACEHOLDERS)


def bigquery_problems(config: PipelineConfig) -> list[str]:
    """A BigQuery source: a span query needs its span (TFX cannot ask a query for its newest
    span, and would read day 0, 1970-01-01); BigQuery exports the result through GCS."""
    problems = []
    if query_has_span(config) and config.span < 0:
        problems.append("the BigQuery query uses a span placeholder: choose the span with "
                        "--span N (N = days since 1970-01-01, e.g. 16071 = 2014-01-01)")
    if config.input_pattern:
        problems.append("bigquery_query and input_pattern are two sources: give one")
    if config.profile == "local":
        if not config.gcp_project:
            problems.append(f"bigquery_query needs gcp_project ({how_to_set('gcp_project')})")
        if not config.dataflow_temp_location.startswith("gs://"):
            problems.append("bigquery_query needs a gs:// dataflow_temp_location, where "
                            "BigQuery exports the rows for Beam to read "
                            f"({how_to_set('dataflow_temp_location')})")
    return problems


def vertex_problems(config: PipelineConfig) -> list[str]:
    """Everything that stops a Vertex run, each with the flag and variable that set it."""
    problems = []
    required = ("gcp_project", "gcp_region", "image") + (
        () if config.bigquery_query else ("data_root",))
    for name in required:
        if not getattr(config, name):
            problems.append(f"{name} is required ({how_to_set(name)})")
    if config.gcp_region and not REGION.match(config.gcp_region):
        problems.append(f"gcp_region {config.gcp_region!r} is not a region like us-central1 "
                        f"({how_to_set('gcp_region')})")
    # Settings derived from OUTPUT_ROOT are named once, by the flag the user gave.
    derived = {"pipeline_root", "serving_dir", "dataflow_temp_location"}
    root = config.output_root
    if root and not root.startswith("gs://"):
        problems.append(f"output_root must be a gs:// URI, got {root!r} "
                        f"({how_to_set('output_root')}); to try the Vertex pipeline on "
                        "this machine, run vertex_runner.py --offline")
    for name in ("output_root", "data_root", "inference_data_root"):
        value = getattr(config, name)
        if value.startswith("gs://") and not GCS_URI.match(value):
            problems.append(f"{name} {value!r} names no bucket ({how_to_set(name)})")
    for name in ("pipeline_root", "data_root", "serving_dir", "dataflow_temp_location",
                 "inference_data_root"):
        value = getattr(config, name)
        if name in derived and value.startswith(f"{root.rstrip('/')}/") and root:
            continue
        if value and not value.startswith("gs://"):
            problems.append(f"{name} must be a gs:// URI, got {value!r} ({how_to_set(name)})")
    if config.analyzer_cache:
        problems.append("analyzer_cache runs locally only: on Vertex the window's older spans "
                        "come from the span catalog, which the cache is not keyed by "
                        f"({how_to_set('analyzer_cache')})")
    workers, servers = config.training_workers, config.training_parameter_servers
    if servers and not workers:
        problems.append(f"training_parameter_servers {servers} needs training_workers >= 1 "
                        f"({how_to_set('training_workers')}): parameter servers hold "
                        "variables, workers compute")
    if config.distribution == "parameter_server" and not servers:
        problems.append("distribution parameter_server needs training_parameter_servers >= 1 "
                        f"({how_to_set('training_parameter_servers')})")
    if config.distribution == "multi_worker" and not workers:
        problems.append("distribution multi_worker needs a cluster: training_workers >= 1 "
                        f"({how_to_set('training_workers')})")
    if config.distribution in ("none", "mirrored") and workers:
        problems.append(f"distribution {config.distribution} trains on one machine; with "
                        f"training_workers {workers} every replica would train its own model "
                        f"(use auto or multi_worker, {how_to_set('distribution')})")
    if config.backup_every_seconds and not config.backup_every_steps and workers and \
            not servers:
        problems.append("backup_every_seconds needs a single training process; the replicas "
                        "of a multi-worker job back up at the same step "
                        f"({how_to_set('backup_every_steps')})")
    if servers and config.distribution == "multi_worker":
        problems.append("distribution multi_worker takes no parameter servers "
                        "(use auto or parameter_server)")
    if config.serving_endpoint:
        from serving.vertex_images import serving_image_problem

        problem = serving_image_problem(config.serving_image)
        if problem:
            problems.append(f"{problem} ({how_to_set('serving_image')})")
    if not 0 <= config.serving_traffic_percent <= 100:
        problems.append("serving_traffic_percent must be in 0..100")
    return problems


def kubeflow_problems(config: PipelineConfig) -> list[str]:
    """What stops a run on open-source Kubeflow Pipelines, with the flag that set it."""
    problems = [f"{name} is required ({how_to_set(name)})"
                for name in ("image", "data_root") if not getattr(config, name)]
    # Every path is read inside the cluster's pods, never on this machine.
    for name in ("output_root", "data_root"):
        value = getattr(config, name)
        if value and "://" not in value:
            problems.append(f"{name} must be a URI the cluster's pods can read (gs://, s3://, "
                            f"hdfs://), got {value!r} ({how_to_set(name)})")
    if "{SPAN}" in config.input_pattern:
        problems.append("a {SPAN} layout needs ExampleGen's driver, which Vertex runs as a "
                        "pre-cache hook and Kubeflow Pipelines' backend does not: give each "
                        "run its span's folder as data_root and no {SPAN} pattern "
                        f"({how_to_set('input_pattern')})")
    if config.training_workers or config.training_parameter_servers:
        problems.append("training_workers and training_parameter_servers are Vertex Training "
                        "pools; on Kubeflow the Trainer runs in its task's pod (mirrored over "
                        "the pod's GPUs) (--training-workers 0)")
    if config.distribution in ("multi_worker", "parameter_server"):
        problems.append(f"distribution {config.distribution} needs a cluster of replicas, "
                        "which Kubeflow's Trainer pod is not (use auto, none or mirrored; "
                        f"{how_to_set('distribution')})")
    if config.serving_endpoint:
        problems.append("serving_endpoint is a Vertex endpoint; on Kubeflow the Pusher "
                        f"writes to serving_dir ({how_to_set('serving_endpoint')})")
    if config.analyzer_cache:
        problems.append(f"analyzer_cache runs locally only ({how_to_set('analyzer_cache')})")
    return problems


PROFILES = PipelineConfig.PROFILES
load = PipelineConfig.load
from_args = PipelineConfig.from_args


def add_arguments(parser: argparse.ArgumentParser, cloud: bool = True) -> None:
    """The pipeline's settings as flags; without `cloud`, the settings only a compiled job
    reads are accepted but not listed."""
    PipelineConfig.add_arguments(parser, "pipeline settings",
                                 hidden=() if cloud else PipelineConfig.CLOUD_ONLY)

"""create_pipeline(config): the single DAG used by the local runner, Vertex and the notebook.

ArrowExampleGen (one span) -> SpanExamples -> StatisticsGen -> ImportSchemaGen -> ExampleValidator
  -> DriftCheck (vs the last blessed model's data) -> AnomalyGate
  -> SpanWindow (the newest TRAINING_SPANS spans) -> Transform (OneReadTransform: the
     splits it analyses read as one dataset; with --analyzer-cache: SpanTransform, its
     cache keyed by span) -> [Tuner]
  -> Trainer (optionally warm-started from the latest blessed model)
  -> Evaluator (newest span, vs the latest blessed model; on Kubeflow, vs the served model)
  -> [RefitTransform -> Refit -> RefitCheck: the blessed recipe on every row, held to the
     evaluated model] -> [SafeToServe] -> Pusher
  [InferenceExampleGen -> BulkInferrer (blessed candidate) -> PredictionsExport]
  [EdgeExport: the blessed candidate as TFLite, compared with the SavedModel on eval]
  [RunReport: the run's HTML report, from inside the DAG (Vertex)]

Functions are referenced by dotted path (models.preprocessing.preprocessing_fn, ...), so
the same code is imported from the project package locally and from the image on Vertex.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import tensorflow_model_analysis as tfma
from google.protobuf import json_format

# Not `tfx.v1`: its google_cloud_ai_platform extensions import the Vertex SDK, seconds of
# start-up that a local run never uses.
from tfx.components import (
    BulkInferrer,
    CsvExampleGen,
    Evaluator,
    ExampleValidator,
    StatisticsGen,
    Trainer,
    Tuner,
)
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.canned_resolver_functions import rolling_range
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import (
    bulk_inferrer_pb2,
    example_gen_pb2,
    pusher_pb2,
    range_config_pb2,
    trainer_pb2,
    transform_pb2,
)
from tfx.types import Channel, standard_artifacts

from control import approvals as control_approvals
from control import marks as control_marks
from control import records as control_records
from models import features as F
from models.model import PROBABILITY, output_key
from pipeline import configs
from pipeline.components.anomaly_gate import AnomalyGate
from pipeline.components.arrow_example_gen import ArrowExampleGen, TimeSplit
from pipeline.components.drift_check import DriftCheck
from pipeline.components.edge_export import EdgeExport
from pipeline.components.leakage_check import LeakageCheck
from pipeline.components.one_read_transform import OneReadTransform
from pipeline.components.predictions_export import PREDICTION_COLUMN, PredictionsExport
from pipeline.components.pusher import Pusher
from pipeline.components.refit_check import RefitCheck
from pipeline.components.run_report import RunReport
from pipeline.components.safe_to_serve import SafeToServe
from pipeline.components.served_model import BaselineEvaluator, ServedModel
from pipeline.components.span_transform import SpanTransform
from pipeline.components.span_window import EVAL_SPLIT, SpanExamples, SpanWindow
from pipeline.components.span_window import train_splits as span_window_splits
from pipeline.configs import PipelineConfig
from pipeline.fused_binary_metrics import FusedBinaryMetrics

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.model.run_fn"
TUNER_FN = "models.tuner.tuner_fn"
EVAL_SIGNATURE = "serving_examples"
INFERENCE_SPLIT = "unlabelled"
EXAMPLE_GEN = "ExampleGen"  # the node id, whichever ExampleGen reads the data


def time_split(config: PipelineConfig) -> TimeSplit | None:
    """The out-of-time split ArrowExampleGen makes (None: a hash split)."""
    if config.split_method() != "time":
        return None
    return TimeSplit(config.time_column, config.eval_fraction, config.eval_days,
                     config.eval_gap_days, config.problem().time_format)


def output_config(config: PipelineConfig) -> example_gen_pb2.Output:
    split = example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=config.train_buckets),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=config.eval_buckets),
    ])
    if config.partition_feature:
        split.partition_feature_name = config.partition_feature
    return example_gen_pb2.Output(split_config=split)


def input_config(config: PipelineConfig) -> example_gen_pb2.Input | None:
    if not config.input_pattern:
        return None  # every file under data_root, as one span
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="single_split", pattern=config.input_pattern)])


def range_config(config: PipelineConfig) -> range_config_pb2.RangeConfig | None:
    """A chosen span (the watcher ingests spans in order); None = ExampleGen's newest."""
    if config.span < 0 or "{SPAN}" not in config.input_pattern:
        return None
    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=config.span, end_span_number=config.span))


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """The task's metrics overall and by slice; blessing = the problem's metric past its
    threshold, and no worse than the baseline's by more than its max_change."""
    problem = config.problem()
    blessing = config.blessing()
    direction = tfma.MetricDirection.HIGHER_IS_BETTER if blessing.higher_is_better \
        else tfma.MetricDirection.LOWER_IS_BETTER
    # A bound on every judged metric (TFMA finds a threshold with only a change bound
    # "missing" before there is a baseline): an infinite one is written as the largest float.
    limit = blessing.threshold if math.isfinite(blessing.threshold) else \
        math.copysign(sys.float_info.max, blessing.threshold)
    bound = {"lower_bound" if blessing.higher_is_better else "upper_bound": {"value": limit}}
    change = -blessing.max_change - 1e-10 if blessing.higher_is_better \
        else blessing.max_change + 1e-10
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(**bound),
        change_threshold=tfma.GenericChangeThreshold(direction=direction,
                                                     absolute={"value": change}))
    # Thresholds judge the overall slice only: small slices (a rare payment type, a quiet
    # hour) are reported, but their noisy figures must not veto a model.
    judged = [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                           threshold=threshold)]
    if problem.task == "binary":
        # TFMA's AUC, AUCPrecisionRecall, CalibrationPlot, BinaryAccuracy, Precision,
        # Recall (at 0.5), Calibration, MeanLabel and MeanPrediction, their values from
        # one pass over the examples instead of three.
        metrics = [tfma.MetricConfig(
            class_name=FusedBinaryMetrics.__name__, module=FusedBinaryMetrics.__module__,
            config=json.dumps({"name": blessing.metric}),  # the metric its thresholds judge
            per_slice_thresholds=judged)]
    else:
        metrics = [tfma.MetricConfig(class_name=name, config=json.dumps({"name": short}),
                                     per_slice_thresholds=judged if short == blessing.metric
                                     else [])
                   for name, short in TASK_METRICS[problem.task]]
        if problem.task == "multiclass":
            metrics.append(tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"))
    time_slices = F.TIME_SLICES if problem.time_column and \
        problem.time_format == "unix_seconds" else ()
    if problem.label.observed:  # the rows whose label is really observed, beside all rows
        time_slices = (F.OBSERVED_SLICE, *time_slices)
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=EVAL_SIGNATURE,
            label_key=problem.label_xf,
            prediction_key=output_key(problem.task),
            preprocessing_function_names=["transform_features"],
        )],
        # Overall, by each configured feature, and by the year and quarter of the row
        # (outputs of the Transform graph that only the Evaluator reads): decay shows.
        slicing_specs=[tfma.SlicingSpec()]
        + [tfma.SlicingSpec(feature_keys=[name]) for name in (*config.slices, *time_slices)],
        metrics_specs=[tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name="ExampleCount"), *metrics])],
    )


# Each task's metrics beside the binary task's fused ones: (TFMA or Keras class, name).
TASK_METRICS = {
    "multiclass": [("SparseCategoricalAccuracy", "accuracy"),
                   ("SparseCategoricalCrossentropy", "log_loss")],
    "regression": [("RootMeanSquaredError", "rmse"), ("MeanAbsoluteError", "mae"),
                   ("MeanSquaredError", "mse"), ("MeanLabel", "mean_label"),
                   ("MeanPrediction", "mean_prediction")],
}


def _all_runs(artifact_type, producer, output_key: str) -> Channel:
    """`producer`'s `output_key` artifacts of every run of this pipeline, this one included
    (the consumer must run after `producer`: it does when it also reads a current output)."""
    return Channel(type=artifact_type, producer_component_id=producer.id, output_key=output_key)


def bigquery_example_gen(config: PipelineConfig, **kwargs):
    """TFX's BigQueryExampleGen on BIGQUERY_QUERY. Locally its query driver fills the span's
    placeholders; Vertex and Kubeflow run no driver for a query, so the chosen span's are
    filled here, at compile time."""
    from tfx.components.example_gen import utils as example_gen_utils
    from tfx.extensions.google_cloud_big_query.example_gen.component import (
        BigQueryExampleGen,
    )

    query = config.bigquery_query
    span_range = None
    if configs.query_has_span(config):
        if config.profile == "local":
            span_range = range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
                start_span_number=config.span, end_span_number=config.span))
        else:
            query = example_gen_utils.get_query_for_span(query, config.span)
    return BigQueryExampleGen(
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="single_split", pattern=query)]),
        range_config=span_range, **kwargs)


def example_gen(config: PipelineConfig, input_base: str, by_time: TimeSplit | None = None,
                **kwargs):
    """ArrowExampleGen (users' CSV as their tools write it, and Parquet), or TFX's
    CsvExampleGen with `example_gen=tfx-csv`; the same Examples artifact out."""
    if config.example_gen == "tfx-csv":
        return CsvExampleGen(input_base=input_base, **kwargs)
    delimiter = "\t" if config.csv_delimiter == "tab" else config.csv_delimiter
    component = ArrowExampleGen(input_base=input_base, delimiter=delimiter,
                                schema_file=config.schema_file, by_time=by_time,
                                block_bytes=config.input_block_mb << 20, **kwargs)
    if config.profile == "local" and config.running_mode()[0] == "multi_processing":
        # Its work is C++ and numpy, a block of a file per element: threads share the
        # blocks, where Beam's worker processes would each add their start-up and a copy
        # of the libraries in memory (figures: benchmarks/README.md, ExampleGen).
        component = component.with_beam_pipeline_args(
            ["--direct_running_mode=multi_threading",
             f"--direct_num_workers={config.beam_num_workers}"])
    return component


@dataclass
class Ingested:
    """The first stage: this run's rows with their statistics, schema and validation; the
    window of spans to train on; and the last blessed model (the baseline)."""

    components: list
    examples: Channel  # ExampleGen's output, with its span
    anomaly_gate: AnomalyGate
    statistics_gen: StatisticsGen
    schema_gen: ImportSchemaGen
    example_validator: ExampleValidator
    drift_check: DriftCheck | None
    span_window: SpanWindow
    window_spans: int
    baseline: Channel
    model_resolver: Any

    @property
    def schema(self) -> Channel:
        return self.schema_gen.outputs["schema"]


@dataclass
class Trained:
    components: list
    transform: Any
    trainer: Any
    hyperparameters: Any = None  # the Tuner's best, if it ran


@dataclass
class Refitted:
    components: list
    check: Any  # RefitCheck: the model that goes on, and its verdict


@dataclass
class Judged:
    components: list
    evaluator: Any
    evaluation_config: tfma.EvalConfig
    safe_to_serve: SafeToServe | None
    pusher: Any
    refitted: Refitted | None = None


def ingest_and_validate(config: PipelineConfig) -> Ingested:
    """ExampleGen -> statistics -> schema -> validation and drift -> the gate that stops a
    run on bad data, and the span window Transform will read."""
    if config.bigquery_query:
        ingest = bigquery_example_gen(config, output_config=output_config(config))
    else:
        ingest = example_gen(
            config, config.data_root, by_time=time_split(config),
            input_config=input_config(config), output_config=output_config(config),
            range_config=range_config(config))
    ingest = ingest.with_id(EXAMPLE_GEN)
    # Spans across runs: the training window and the previous span's statistics. Only with a
    # span layout (a {SPAN} pattern): flat data is one span, run after run. Locally they are
    # resolved from MLMD: a producer's own output channel resolves only this run's
    # artifacts, so these channels name the producer instead, which reaches its artifacts of
    # every run. Vertex's compiler resolves only "the latest artifact", so there the span
    # catalog under the pipeline root carries them (pipeline/components/span_catalog.py).
    across_runs = "{SPAN}" in config.input_pattern
    catalog = f"{config.pipeline_root}/span_catalog" \
        if across_runs and config.profile == "vertex" else ""
    window_spans = config.training_spans if across_runs else 1
    marked = contamination_marks(config)
    span_examples = SpanExamples(examples=ingest.outputs["examples"], catalog=catalog, **marked)
    examples = span_examples.outputs["spanned"]
    statistics_gen = StatisticsGen(examples=examples)
    schema_gen = ImportSchemaGen(schema_file=config.schema_file)
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    model_resolver = baseline_model(config)
    baseline = model_resolver.outputs["model"]

    # Drift: against the data behind the last blessed model (locally, in every layout), or
    # the previous span before one is blessed; on Vertex against the previous span only.
    drift_check = None
    recent_spans = examples
    if across_runs and not catalog:
        recent_spans = rolling_range(
            _all_runs(standard_artifacts.Examples, span_examples, "spanned"),
            num_spans=config.training_spans, min_spans=1)
    if config.profile == "local" or across_runs:
        drift_check = DriftCheck(
            statistics=statistics_gen.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
            history=None if catalog else _all_runs(
                standard_artifacts.ExampleStatistics, statistics_gen, "statistics"),
            blessed_model=None if catalog else baseline,
            catalog=catalog,
        )
    span_window = SpanWindow(examples=recent_spans, spans=window_spans, catalog=catalog,
                             **marked)
    span_window.add_upstream_node(span_examples)  # this run's span is part of the window
    leakage_check = LeakageCheck(
        window=span_window.outputs["window"], schema=schema_gen.outputs["schema"],
        request_log=config.serving_request_log if config.profile == "local" else "",
        max_single_auc=config.leakage_max_single_auc)
    # Anomalies, drift and leakage stop the run here, before Transform.
    anomaly_gate = AnomalyGate(
        anomalies=example_validator.outputs["anomalies"],
        statistics=statistics_gen.outputs["statistics"],
        drift=drift_check.outputs["drift"] if drift_check else None,
        leakage=leakage_check.outputs["leakage"],
        drift_action=config.drift_action,
    )
    return Ingested(
        [ingest, span_examples, statistics_gen, schema_gen, example_validator, drift_check,
         span_window, leakage_check, anomaly_gate],
        examples, anomaly_gate, statistics_gen, schema_gen, example_validator, drift_check,
        span_window, window_spans, baseline, model_resolver)


def contamination_marks(config: PipelineConfig) -> dict[str, str]:
    """What SpanExamples and SpanWindow leave out (control/marks.py). Locally the active marks
    are read now, so a new mark changes the components' parameters and no cached output
    hides it; every profile also reads the control folder when the step runs, so a job
    compiled before a mark (a Vertex schedule) honours it too."""
    marks = control_marks.active(config.control_dir) if config.profile == "local" else []
    return {"marks": control_marks.to_json(marks), "control_dir": config.control_dir}


def baseline_model(config: PipelineConfig):
    """What a candidate is judged against and warm-started from: the latest blessed model in
    MLMD, or on Kubeflow (which compiles no resolver) the newest served version."""
    if config.profile == "kubeflow":
        return ServedModel(serving_dir=config.serving_dir).with_id("ServedModel")
    return Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")


def transform_and_train(config: PipelineConfig, data: Ingested) -> Trained:
    """Transform analyses the window (the one graph), then [Tuner ->] Trainer."""
    across_runs = "{SPAN}" in config.input_pattern
    train_splits = span_window_splits(data.window_spans)
    # With --analyzer-cache each span is analysed once while it stays in the window
    # (SpanTransform keys the cache by span). Flat data is a new span every run: no cache.
    cache, cache_resolver, transform_class = \
        {"disable_analyzer_cache": True}, None, OneReadTransform
    if across_runs and config.analyzer_cache and config.profile != "vertex":
        cache_resolver = Resolver(
            strategy_class=LatestArtifactStrategy,
            cache=Channel(type=standard_artifacts.TransformCache),
        ).with_id("latest_analyzer_cache_resolver")
        cache = {"analyzer_cache": cache_resolver.outputs["cache"]}
        transform_class = SpanTransform
    transform, training_inputs = window_transform(config, data, train_splits, "Transform",
                                                  transform_class, **cache)
    tuner = tuner_component(config, training_inputs, train_splits) \
        if config.enable_tuning else None
    hyperparameters = tuner.outputs["best_hyperparameters"] if tuner else None
    trainer = trainer_component(config, data, training_inputs, train_splits, hyperparameters)
    return Trained([cache_resolver, transform, tuner, data.model_resolver, trainer],
                   transform, trainer, hyperparameters)


def window_transform(config: PipelineConfig, data: Ingested, analyze: list[str], node_id: str,
                     transform_class=OneReadTransform, **cache) -> tuple[Any, dict]:
    """Transform over the window's rows, its vocabularies and statistics from the `analyze`
    splits (the one graph the model trained on them carries), after the data gate; and what
    a Tuner or Trainer reads from it: the (transformed or raw) rows, the graph, eval
    batches. Materialized, every split is written transformed; otherwise the Tuner and
    Trainer run the graph on the raw rows as they read them (models.model.input_fn), which
    skips writing every row."""
    materialize = config.materializes()
    window = data.span_window.outputs["window"]
    every = [*span_window_splits(data.window_spans), EVAL_SPLIT]
    transform = transform_class(
        examples=window,
        schema=data.schema,
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"problem": config.problem().to_json()},
        splits_config=transform_pb2.SplitsConfig(analyze=analyze,
                                                 transform=every if materialize else []),
        materialize=materialize,
        # Statistics of the transformed data are not used downstream; skipping them
        # saves two full passes over the data.
        disable_statistics=True,
        **cache,
    ).with_id(node_id)
    transform.add_upstream_node(data.anomaly_gate)  # nothing reads rows the gate stopped
    return transform, {
        "examples": transform.outputs["transformed_examples"] if materialize else window,
        "transform_graph": transform.outputs["transform_graph"],
        "eval_args": trainer_pb2.EvalArgs(splits=[EVAL_SPLIT], num_steps=config.eval_steps),
    }


def trainer_component(config: PipelineConfig, data: Ingested, training_inputs: dict,
                      splits: list[str], hyperparameters, refit: bool = False):
    """The Trainer (Vertex's on Vertex); with `refit`, the Refit: the same recipe on
    `splits`, the evaluation split among them, at the same steps per row."""
    trainer_class, trainer_extra = (Trainer, {}) if config.profile != "vertex" else \
        _vertex_trainer(config)
    holdout = config.in_time_holdout if config.split_method() == "time" and not refit else 0.0
    return trainer_class(
        run_fn=RUN_FN,
        schema=data.schema,
        hyperparameters=hyperparameters,
        base_model=data.baseline if config.warm_start else None,
        train_args=trainer_pb2.TrainArgs(splits=splits, num_steps=config.train_steps),
        **training_inputs,
        **_merge_custom_config(trainer_extra, {"problem": config.problem().to_json(),
                                               "hparams": config.hparams, "seed": config.seed,
                                               "recency_half_life": config.recency_half_life,
                                               "distribution": config.distribution,
                                               "raw_examples": not config.materializes(),
                                               "in_time_holdout": holdout,
                                               **({"refit": True} if refit else {}),
                                               **backup_config(config, refit),
                                               **contamination_marks(config)}),
    ).with_id("Refit" if refit else "Trainer")


def refit_stage(config: PipelineConfig, data: Ingested, trained: Trained,
                evaluator) -> Refitted:
    """After the blessing: Transform analyses every row of the window (the evaluation's
    too), the Refit trains the blessed recipe on them, RefitCheck holds it to the evaluated
    model (pipeline/components/refit_check.py) and outputs what goes on to be pushed."""
    every = [EVAL_SPLIT, *span_window_splits(data.window_spans)]  # newest first, as spans are
    transform, training_inputs = window_transform(config, data, every, "RefitTransform",
                                                  disable_analyzer_cache=True)
    trainer = trainer_component(config, data, training_inputs, every, trained.hyperparameters,
                                refit=True)
    # After the blessing, as the name says: a failed evaluation costs no second training on
    # the orchestrators that skip what a failed step leaves, and two training clusters never
    # share one machine's cores (or loopback ports, offline) at once.
    trainer.add_upstream_node(evaluator)
    check = RefitCheck(
        evaluated_model=trained.trainer.outputs["model"],
        evaluated_run=trained.trainer.outputs["model_run"],
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        refit_model=trainer.outputs["model"],
        refit_run=trainer.outputs["model_run"],
        examples=data.examples,
        split=EVAL_SPLIT,
        max_disagreement=config.refit_max_disagreement,
        max_loss_factor=config.refit_max_loss_factor,
        fallback=config.refit_fallback,
    )
    return Refitted([transform, trainer, check], check)


def backup_config(config: PipelineConfig, refit: bool = False) -> dict:
    """Where and how often the Trainer (or the Refit) backs up its state
    (models/fault_tolerance.py)."""
    if not config.backs_up():
        return {}
    node = "Refit" if refit else "Trainer"
    return {"backup_root": f"{config.pipeline_root.rstrip('/')}/{node}/backups",
            "backup_every_steps": config.backup_every_steps,
            "backup_every_seconds": config.backup_every_seconds}


def tuner_component(config: PipelineConfig, training_inputs: dict, train_splits: list[str]):
    tuner_class, tuner_extra = (Tuner, {}) if config.profile != "vertex" else \
        _vertex_tuner(config)
    return tuner_class(
        tuner_fn=TUNER_FN,
        train_args=trainer_pb2.TrainArgs(splits=train_splits, num_steps=config.tuner_steps),
        **training_inputs,
        **_merge_custom_config(tuner_extra, {"problem": config.problem().to_json(),
                                             "trials": config.tuner_trials,
                                             "seed": config.seed, "hparams": config.hparams,
                                             "raw_examples": not config.materializes()}),
    )


def evaluate_and_push(config: PipelineConfig, data: Ingested, trained: Trained) -> Judged:
    """Evaluator (thresholds and the baseline) -> [SafeToServe] -> Pusher, which pushes only
    what both blessed."""
    model = trained.trainer.outputs["model"]
    evaluation_config = eval_config(config)
    evaluator = (BaselineEvaluator if config.profile == "kubeflow" else Evaluator)(
        examples=data.examples,
        model=model,
        baseline_model=data.baseline,
        eval_config=evaluation_config,
    ).with_id("Evaluator")
    blessing = evaluator.outputs["blessing"]
    refitted = refit_stage(config, data, trained, evaluator) if config.refit else None
    if refitted:  # what goes on: the refit that passed its guards (or the fallback)
        model = refitted.check.outputs["model"]
    safe_to_serve = None
    if config.safe_to_serve:
        safe_to_serve = SafeToServe(
            model=model,
            model_blessing=blessing,
            examples=data.examples,
            model_name=config.serving_model_name,
            warmup_requests=config.warmup_requests,
            latency_p99_budget_ms=config.latency_p99_budget_ms,
            memory_budget_mib=config.memory_budget_mib,
            refit=refitted.check.outputs["verdict"] if refitted else None,
        )
    # What the Pusher pushes and the blessings it requires: with the serving check, its
    # copy of the model that carries TF Serving warmup requests, and both blessings.
    to_push = {"model_blessing": blessing}
    if safe_to_serve:
        to_push["infra_blessing"] = safe_to_serve.outputs["infra_blessing"]
    else:
        to_push["model"] = model
        if refitted:  # the refit's verdict, which the Pusher reads as it reads SafeToServe's
            to_push["infra_blessing"] = refitted.check.outputs["verdict"]
    # Pusher checks the blessings itself: an unblessed model is recorded as not pushed.
    if config.profile == "vertex" and config.serving_endpoint:
        pusher = _vertex_endpoint_pusher(config, to_push)
    else:
        # Ours also declines to copy a model that is already the newest served version.
        pusher = Pusher(
            **to_push,
            push_destination=pusher_pb2.PushDestination(
                filesystem=pusher_pb2.PushDestination.Filesystem(
                    base_directory=config.serving_dir)),
            custom_config=approval_config(config),
        )
    return Judged([evaluator, *(refitted.components if refitted else []), safe_to_serve,
                   pusher], evaluator, evaluation_config, safe_to_serve, pusher, refitted)


def approval_config(config: PipelineConfig) -> dict:
    """With --require-approval, what the Pusher checks when it runs (control/approvals.py).
    Locally the approvals recorded so far are part of it, so an approval changes the
    Pusher's parameters and the next run pushes instead of reusing its cached refusal; a
    compiled job's Pusher is never cached (pipeline/orchestration/vertex.py)."""
    if not config.require_approval:
        return {}
    decided = [r.id for r in control_records.read(config.control_dir, (
        control_approvals.APPROVE, control_approvals.REJECT))] if config.profile == "local" else []
    return {"require_approval": True, "control_dir": config.control_dir,
            "decisions": ",".join(decided)}


def outputs(config: PipelineConfig, data: Ingested, trained: Trained, judged: Judged) -> list:
    """What a blessed candidate makes besides the push: batch predictions, a TFLite export,
    and the run report written inside the DAG."""
    model, blessing = trained.trainer.outputs["model"], judged.evaluator.outputs["blessing"]
    if judged.refitted:  # the model that is pushed
        model = judged.refitted.check.outputs["model"]
    batch = batch_inference(config, model, blessing) if config.inference_data_root else []
    edge_export = EdgeExport(
        model=model, model_blessing=blessing, examples=data.examples, split=EVAL_SPLIT,
        max_auc_loss=config.tflite_max_auc_loss) if config.export_tflite else None
    report = run_report(config, data, trained, judged, batch, edge_export) \
        if config.report_in_pipeline else None
    return [*batch, edge_export, report]


def run_report(config: PipelineConfig, data: Ingested, trained: Trained, judged: Judged,
               batch: list, edge_export) -> RunReport:
    """The run's HTML report from inside the DAG (Vertex has no local MLMD file to read)."""
    return RunReport(
        examples=data.examples,
        statistics=data.statistics_gen.outputs["statistics"],
        anomalies=data.example_validator.outputs["anomalies"],
        schema=data.schema,
        drift=data.drift_check.outputs["drift"] if data.drift_check else None,
        window=data.span_window.outputs["window"],
        transform_graph=trained.transform.outputs["transform_graph"],
        model_run=trained.trainer.outputs["model_run"],
        model=trained.trainer.outputs["model"],
        evaluation=judged.evaluator.outputs["evaluation"],
        blessing=judged.evaluator.outputs["blessing"],
        infra_blessing=judged.safe_to_serve.outputs["infra_blessing"]
        if judged.safe_to_serve else None,
        pushed_model=judged.pusher.outputs["pushed_model"],
        predictions=batch[-1].outputs["predictions"] if batch else None,
        edge_model=edge_export.outputs["edge_model"] if edge_export else None,
        pipeline_name=config.pipeline_name,
        eval_config=json_format.MessageToJson(judged.evaluation_config,
                                              preserving_proto_field_name=True),
    )


def create_components(config: PipelineConfig) -> list:
    """The components in run order, stage by stage; `create_pipeline` wraps them, the
    notebook runs them one at a time."""
    data = ingest_and_validate(config)
    trained = transform_and_train(config, data)
    judged = evaluate_and_push(config, data, trained)
    stages = [*data.components, *trained.components, *judged.components,
              *outputs(config, data, trained, judged)]
    return [c for c in stages if c is not None]


def batch_inference(config: PipelineConfig, model, blessing) -> list:
    """Static serving: every row under INFERENCE_DATA_ROOT scored by the candidate if blessed.

    BulkInferrer runs the model's `serving_examples` signature (the Transform graph inside)
    and writes each input example back with the probability added, so the key travels with
    it; PredictionsExport turns that into a table (and BigQuery rows on Vertex)."""
    inference_gen = example_gen(
        config, config.inference_data_root,
        output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name=INFERENCE_SPLIT, hash_buckets=1)])),
    ).with_id("InferenceExampleGen")
    bulk_inferrer = BulkInferrer(
        examples=inference_gen.outputs["examples"],
        model=model,
        model_blessing=blessing,
        data_spec=bulk_inferrer_pb2.DataSpec(example_splits=[INFERENCE_SPLIT]),
        model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[EVAL_SIGNATURE]),
        output_example_spec=bulk_inferrer_pb2.OutputExampleSpec(output_columns_spec=[
            bulk_inferrer_pb2.OutputColumnsSpec(
                predict_output=bulk_inferrer_pb2.PredictOutput(output_columns=[
                    bulk_inferrer_pb2.PredictOutputCol(output_key=PROBABILITY,
                                                       output_column=PREDICTION_COLUMN)]))]),
    )
    export = PredictionsExport(
        inferred=bulk_inferrer.outputs["output_examples"],
        key=config.inference_key,
        file_format=config.predictions_format,
        bigquery_table=config.predictions_bigquery_table,
    )
    return [inference_gen, bulk_inferrer, export]


# ---------------------------------------------------------------- Vertex variants
# Imported only for the vertex profile: the extensions pull in the Vertex SDK, slow to import.


def _merge_custom_config(extra: dict, ours: dict) -> dict:
    return {"custom_config": {**ours, **extra.get("custom_config", {})},
            **{k: v for k, v in extra.items() if k != "custom_config"}}


def vertex_job_spec(config: PipelineConfig, cluster: bool = True) -> dict:
    """The CustomJob TFX's Vertex Trainer/Tuner executors launch: {project, job_spec}.

    Pool 0 is the one primary replica Vertex requires; with `cluster`, pool 1 holds
    TRAINING_WORKERS more workers and pool 2 TRAINING_PARAMETER_SERVERS servers. Vertex
    gives each replica TF_CONFIG, from which models/distribution.py picks the strategy.
    The Tuner's job is pool 0 alone: its executor adds the parallel trials as pool 1.
    `scheduling`: Spot VMs, whether one replica's restart restarts them all, the timeout."""
    machine = {"machine_type": config.training_machine_type}
    if config.training_accelerator_type:
        machine["accelerator_type"] = config.training_accelerator_type
        machine["accelerator_count"] = config.training_accelerator_count

    def pool(replicas: int, machine_spec: dict) -> dict:
        return {"machine_spec": machine_spec, "replica_count": replicas,
                "container_spec": {"image_uri": config.image}}

    pools = [pool(1, machine)]
    if cluster and (config.training_workers or config.training_parameter_servers):
        pools.append(pool(config.training_workers, machine))
    if cluster and config.training_parameter_servers:  # servers hold variables: no GPU
        pools.append(pool(config.training_parameter_servers,
                          {"machine_type": config.training_machine_type}))
    job_spec: dict = {"worker_pool_specs": pools}
    if config.service_account:
        job_spec["service_account"] = config.service_account
    scheduling: dict = {}
    if config.training_spot:
        scheduling["strategy"] = "SPOT"
    if cluster and config.restarts_whole_job():
        scheduling["restart_job_on_worker_restart"] = True
    if config.training_timeout_hours:
        scheduling["timeout"] = f"{round(config.training_timeout_hours * 3600)}s"
    if scheduling:
        job_spec["scheduling"] = scheduling
    return {"project": config.gcp_project, "job_spec": job_spec}


def _vertex_trainer(config: PipelineConfig):
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.trainer import executor
    from tfx.extensions.google_cloud_ai_platform.trainer.component import Trainer as VertexTrainer

    return VertexTrainer, {"custom_config": {
        constants.ENABLE_VERTEX_KEY: True,
        constants.VERTEX_REGION_KEY: config.gcp_region,
        executor.TRAINING_ARGS_KEY: vertex_job_spec(config),
    }}


def _vertex_tuner(config: PipelineConfig):
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.tuner import executor
    from tfx.extensions.google_cloud_ai_platform.tuner.component import Tuner as VertexTuner
    from tfx.proto import tuner_pb2

    return VertexTuner, {
        "tune_args": tuner_pb2.TuneArgs(num_parallel_trials=config.tuner_parallel_trials),
        "custom_config": {
            constants.ENABLE_VERTEX_KEY: True,
            constants.VERTEX_REGION_KEY: config.gcp_region,
            executor.TUNING_ARGS_KEY: vertex_job_spec(config, cluster=False),
            executor.REMOTE_TRIALS_WORKING_DIR_KEY: f"{config.pipeline_root}/tuner-trials",
        },
    }


def _vertex_endpoint_pusher(config: PipelineConfig, to_push: dict):
    """Uploads the blessed model and deploys it to the endpoint with the configured traffic;
    models left with no traffic are undeployed (pipeline/components/pusher.py)."""
    from tfx.extensions.google_cloud_ai_platform import constants

    from pipeline.components.vertex_pusher import VertexEndpointPusher

    return VertexEndpointPusher(
        **to_push,
        custom_config={
            constants.ENABLE_VERTEX_KEY: True,
            constants.VERTEX_REGION_KEY: config.gcp_region,
            constants.VERTEX_CONTAINER_IMAGE_URI_KEY: config.serving_image,
            **approval_config(config),
            constants.SERVING_ARGS_KEY: {
                "project_id": config.gcp_project,
                "endpoint_name": config.serving_endpoint,
                "machine_type": config.serving_machine_type,
                "traffic_percentage": config.serving_traffic_percent,
            },
        },
    ).with_id("Pusher")


def create_pipeline(
    config: PipelineConfig, metadata_connection_config=None
) -> tfx_pipeline.Pipeline:
    if metadata_connection_config is None and config.profile == "local":
        metadata_connection_config = metadata.sqlite_metadata_connection_config(
            config.metadata_path)
    return tfx_pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args,
    )

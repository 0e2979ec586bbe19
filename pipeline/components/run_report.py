"""RunReport: the run's HTML report, written by the last node of the DAG itself.

Locally the runner writes the report after the run, from the MLMD SQLite file. On Vertex
the run happens remotely and its metadata live in Vertex ML Metadata, so this component
builds the same page (reporting/report.py) from the artifacts it is handed and writes
report.html into its output artifact on GCS. It waits for the Pusher, so the page says what
was pushed; a run stopped before (data validation) has no such page, as in the console.
"""

import os
import tempfile

from tfx.dsl.component.experimental.annotations import (
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact, standard_artifacts

from pipeline.components.edge_export import EdgeModel
from reporting.artifacts import REPORT_FILE


class RunReportPage(artifact.Artifact):
    """A directory with report.html: one self-contained page for the run."""

    TYPE_NAME = "pipeline.RunReport"  # importable as a schema title: see pipeline/__init__


# Which node each input comes from: the report reads artifacts by producing node, as in MLMD.
NODES = {"examples": "ExampleGen", "statistics": "StatisticsGen",
         "anomalies": "ExampleValidator", "schema": "ImportSchemaGen", "drift": "DriftCheck",
         "window": "SpanWindow", "transform_graph": "Transform", "model_run": "Trainer",
         "model": "Trainer", "evaluation": "Evaluator", "blessing": "Evaluator",
         "infra_blessing": "SafeToServe", "pushed_model": "Pusher",
         "predictions": "PredictionsExport", "edge_model": "EdgeExport"}


@component
def RunReport(
    examples: InputArtifact[standard_artifacts.Examples],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    schema: InputArtifact[standard_artifacts.Schema],
    transform_graph: InputArtifact[standard_artifacts.TransformGraph],
    model_run: InputArtifact[standard_artifacts.ModelRun],
    model: InputArtifact[standard_artifacts.Model],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    blessing: InputArtifact[standard_artifacts.ModelBlessing],
    pushed_model: InputArtifact[standard_artifacts.PushedModel],
    report: OutputArtifact[RunReportPage],
    pipeline_name: Parameter[str],
    eval_config: Parameter[str] = "",
    drift: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
    window: InputArtifact[standard_artifacts.Examples] = None,
    infra_blessing: InputArtifact[standard_artifacts.InfraBlessing] = None,
    predictions: InputArtifact[standard_artifacts.InferenceResult] = None,
    edge_model: InputArtifact[EdgeModel] = None,
) -> None:
    from reporting import report as report_page
    from reporting import runs

    given = {"examples": examples, "statistics": statistics, "anomalies": anomalies,
             "schema": schema, "drift": drift, "window": window,
             "transform_graph": transform_graph, "model_run": model_run, "model": model,
             "evaluation": evaluation, "blessing": blessing, "infra_blessing": infra_blessing,
             "pushed_model": pushed_model, "predictions": predictions, "edge_model": edge_model}
    by_node: dict[str, list] = {}
    for name, value in given.items():
        if value is not None:
            by_node.setdefault(NODES[name], []).append(value)
    run_id = report.uri  # the page names its run by where it lives
    summary = runs.from_artifacts(pipeline_name, run_id, by_node, eval_config)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, REPORT_FILE)
        with open(local, "w", encoding="utf-8") as f:
            f.write(report_page.build(summary))
        fileio.copy(local, os.path.join(report.uri, REPORT_FILE), overwrite=True)
    report.set_string_custom_property("metrics", ", ".join(
        f"{k} {v:.4f}" for k, v in sorted(summary.metrics.items())))

"""SpanTransform: Transform whose analyzer cache survives the rolling window.

tf.Transform can cache each analyzer's partial result per input dataset, so a span analysed
once need not be read again while it stays in the window. TFX keys those datasets by file
pattern, that is by the artifact that holds them; SpanWindow gathers the window into a new
artifact every run (span 5 is `window/41/Split-train_0` in one run, `window/42/Split-train_1`
in the next), so no run could read what the last one wrote. This executor keys each window
split by the span artifact it came from, which SpanWindow records in SOURCES_FILE: a run
analyses its new span and reads the older spans' analyzer results from the cache.
Opt-in (--analyzer-cache): the cache's own stages cost more than they save at 100k-300k
rows a span (benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import json
import os

from tensorflow_transform.beam import analyzer_cache
from tfx.components import Transform
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio

from pipeline.components.span_window import SOURCES_FILE
from pipeline.components.transform_processor import ProcessorExecutor


def span_dataset_key(file_pattern: str) -> str | None:
    """`span-N-<digest of the span artifact and its marks>` for a window split's files, or
    None when the
    pattern is not a window split with a recorded source (TFX's own key is kept then)."""
    split_dir = os.path.dirname(str(file_pattern))
    split = os.path.basename(split_dir).removeprefix("Split-")
    sources_file = os.path.join(os.path.dirname(split_dir), SOURCES_FILE)
    if not fileio.exists(sources_file):
        return None
    with fileio.open(sources_file) as f:
        source = json.load(f).get(split)
    if not source:
        return None
    digest = hashlib.sha256((source["uri"] + source.get("marks", "")).encode()).hexdigest()[:16]
    return f"span-{source['span']}-{digest}"


class _SpanKeyedProcessor(transform_executor.TransformProcessor):
    """TFX's Transform processing with span-keyed datasets (see the module docstring)."""

    def _MakeDatasetList(self, file_patterns, *args, **kwargs):  # noqa: N802 - TFX's name
        datasets = super()._MakeDatasetList(file_patterns, *args, **kwargs)
        for dataset in datasets:
            key = span_dataset_key(dataset.file_pattern)
            if key:
                dataset.dataset_key = analyzer_cache.DatasetKey(key)
        datasets.sort(key=lambda dataset: dataset.dataset_key)  # TFX's order and indices
        for index, dataset in enumerate(datasets):
            dataset.index = index
        return datasets


class Executor(ProcessorExecutor):
    """TFX's Transform executor, processing with _SpanKeyedProcessor."""

    PROCESSOR = _SpanKeyedProcessor


class SpanTransform(Transform):
    """Transform with the span-keyed analyzer cache; give it the latest TransformCache."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

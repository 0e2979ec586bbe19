"""OneReadTransform: Transform that reads the splits it analyses as one dataset.

tf.Transform analyses several splits jointly by flattening one read per split. Beam's local
runner (the FnApiRunner behind the DirectRunner) does not fuse a Flatten of several inputs:
it keeps the whole flattened collection in the runner's memory before the analyzers read it.
At 10M rows that was RefitTransform (the evaluation split and the train split) at an 8.0 GiB
peak; read as one dataset, 2.8 GiB, as Transform on one split (benchmarks/README.md, Scale).

When the analysed splits are every split of the artifact whose name starts alike (the
window's `train_0` .. `train_k`, or those and `eval`), one file pattern matches exactly
their files, so one read covers them: no Flatten. Otherwise TFX's datasets are kept as they
are. Without an analyzer cache only: a cache is kept per dataset (SpanTransform).
"""

from __future__ import annotations

import logging
import os

from tfx.components import Transform
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio

from pipeline.components.transform_processor import ProcessorExecutor

log = logging.getLogger(__name__)


def one_pattern(file_patterns: list[str]) -> str | None:
    """One glob matching exactly the files of `file_patterns` (each `DIR/Split-NAME/*` in
    one DIR), or None when there is none of the form `DIR/Split-PREFIX*/*`."""
    parts = [(os.path.dirname(os.path.dirname(p)), os.path.basename(os.path.dirname(p)),
              os.path.basename(p)) for p in file_patterns]
    if len(parts) < 2 or len({(d, f) for d, _, f in parts}) != 1 or parts[0][2] != "*":
        return None
    prefix = os.path.commonprefix([name for _, name, _ in parts])
    merged = os.path.join(parts[0][0], f"{prefix}*", "*")
    wanted = {f for p in file_patterns for f in fileio.glob(p)}
    return merged if wanted and set(fileio.glob(merged)) == wanted else None


class _OneReadProcessor(transform_executor.TransformProcessor):
    """TFX's Transform processing, the analysed splits read as one dataset if they can be."""

    def _MakeDatasetList(self, file_patterns, file_formats, data_format,  # noqa: N802 - TFX's
                         data_view_uri, can_process_jointly, stats_output_paths=None,
                         materialize_output_paths=None):
        merged = one_pattern(list(file_patterns)) if (
            can_process_jointly and not stats_output_paths and not materialize_output_paths
            and len(set(file_formats)) == 1) else None
        if merged:
            log.info("reading %d splits as one dataset: %s", len(file_patterns), merged)
            file_patterns, file_formats = [merged], [file_formats[0]]
        return super()._MakeDatasetList(file_patterns, file_formats, data_format,
                                        data_view_uri, can_process_jointly,
                                        stats_output_paths, materialize_output_paths)


class Executor(ProcessorExecutor):
    """TFX's Transform executor, processing with _OneReadProcessor."""

    PROCESSOR = _OneReadProcessor


class OneReadTransform(Transform):
    """Transform whose analysed splits are read as one dataset (no analyzer cache)."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

"""What a run on this machine skips of TFX's and Beam's set-up work for remote workers.

Each of TFX's Beam executors (ExampleGen, StatisticsGen, Transform, Evaluator) starts by
copying the installed `tfx` package to a new temporary directory and building an sdist of
it for remote workers (`tfx.utils.dependency_utils.make_beam_dependency_flags`), unless the
Beam arguments already name a package, setup file, requirements file or container image.
The DirectRunner's workers are this machine's threads and processes, which import the
installed tfx: the sdist is never read, costs time per executor (benchmarks/README.md) and
is left behind in the temporary directory. Runs on other runners (Dataflow on Vertex, which
names its container image anyway) keep TFX's behaviour.

Beam's own repeated signature inspection is remembered per class: `beam_dofn_specs`.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from tfx.utils import dependency_utils

from pipeline import beam_dofn_specs

_ORIGINAL = dependency_utils.make_beam_dependency_flags
DIRECT_RUNNERS = {"directrunner", "direct", "bundlebaseddirectrunner", "switchingdirectrunner"}


def runs_here(beam_pipeline_args: list[str]) -> bool:
    """Beam's DirectRunner (the default when no runner is named)."""
    runner = PipelineOptions(flags=list(beam_pipeline_args)).view_as(StandardOptions).runner
    if runner is None:
        return True
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower() in DIRECT_RUNNERS


def beam_dependency_flags(beam_pipeline_args: list[str]) -> list[str]:
    """TFX's dependency flags, without the sdist that local workers never read."""
    if runs_here(beam_pipeline_args):
        return list(beam_pipeline_args)
    return _ORIGINAL(beam_pipeline_args)


def install() -> None:
    """For runs whose executors run in this process (the local runner, the notebook);
    idempotent. TFX's executors look the function up on its module at call time."""
    dependency_utils.make_beam_dependency_flags = beam_dependency_flags
    beam_dofn_specs.install()


def uninstall() -> None:
    dependency_utils.make_beam_dependency_flags = _ORIGINAL
    beam_dofn_specs.uninstall()

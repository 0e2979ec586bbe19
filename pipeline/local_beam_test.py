"""A local run's Beam executors build no TFX sdist; other runners keep TFX's packaging."""

from __future__ import annotations

import tempfile

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

from pipeline import beam_dofn_specs, local_beam


class Doubler(BaseBeamExecutor):
    """A TFX Beam executor as TFX constructs them: the packaging happens in __init__."""

    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 - TFX's name
        with self._make_beam_pipeline() as p:
            assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: 2 * x), equal_to([2, 4]))


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """Where TFX would build its sdist."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    local_beam.install()
    yield tmp_path
    local_beam.uninstall()


def executor(args: list[str]) -> Doubler:
    return Doubler(BaseBeamExecutor.Context(beam_pipeline_args=args))


def test_a_direct_runner_executor_runs_without_building_tfx(temp_dir):
    args = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
    doubler = executor(args)
    doubler.Do({}, {}, {})
    assert not [a for a in doubler._beam_pipeline_args if a.startswith("--extra_package")]
    assert doubler._beam_pipeline_args[:2] == args
    assert list(temp_dir.iterdir()) == []
    assert userstate.get_dofn_specs is beam_dofn_specs.get_dofn_specs


def test_a_remote_runner_still_gets_tfxs_package(temp_dir):
    doubler = executor(["--runner=DataflowRunner", "--project=p", "--region=r"])
    packages = [a.split("=", 1)[1] for a in doubler._beam_pipeline_args
                if a.startswith("--extra_package=")]
    assert len(packages) == 1 and packages[0].startswith(str(temp_dir))
    assert packages[0].endswith(".tar.gz") and "tfx_ephemeral" in packages[0]


@pytest.mark.parametrize("args, here", [
    ([], True),
    (["--runner=DirectRunner"], True),
    (["--runner", "direct"], True),
    (["--runner=BundleBasedDirectRunner"], True),
    (["--runner=DataflowRunner"], False),
    (["--runner=PortableRunner", "--job_endpoint=localhost:8099"], False),
])
def test_runs_here_is_the_direct_runner_alone(args, here):
    assert local_beam.runs_here(args) is here

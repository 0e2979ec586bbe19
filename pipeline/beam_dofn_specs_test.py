"""The per-class answer to Beam's state/timer question: same answers, real pipelines."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from pipeline import beam_dofn_specs

COUNT = userstate.BagStateSpec("seen", VarIntCoder())
FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
# Beam reads state and timers from the methods' default arguments.
COUNT_PARAM, FLUSH_PARAM = beam.DoFn.StateParam(COUNT), beam.DoFn.TimerParam(FLUSH)


class RunningCount(beam.DoFn):
    """Stateful: the running count per key, as Beam's stateful ParDo gives it."""

    def process(self, kv, count=COUNT_PARAM):
        count.add(1)
        yield kv[0], sum(count.read())


class Plain(beam.DoFn):
    def process(self, x):
        yield x


class Holder:
    def stateful(self, kv, count=COUNT_PARAM, flush=FLUSH_PARAM):
        yield kv


class TakesProcessFrom(beam.DoFn):
    """An instance may carry a bound method of another object: its answer is its own."""

    def __init__(self, source: Holder | None = None):
        super().__init__()
        if source is not None:
            self.process = source.stateful

    def process(self, x):
        yield x


@pytest.fixture
def installed():
    beam_dofn_specs.install()
    yield
    beam_dofn_specs.uninstall()


def test_every_dofn_of_a_real_run_gets_beams_own_answer(installed):
    seen: list[beam.DoFn] = []
    cached = userstate.get_dofn_specs

    def recording(dofn):
        seen.append(dofn)
        return cached(dofn)

    userstate.get_dofn_specs = recording
    with beam.Pipeline() as p:
        counts = (p | beam.Create([("a", 1), ("b", 1), ("a", 1), ("a", 1)])
                  | beam.ParDo(RunningCount()) | beam.combiners.Top.PerKey(1))
        assert_that(counts, equal_to([("a", [3]), ("b", [1])]))
    assert len(seen) > len({type(d) for d in seen}) > 3  # asked repeatedly per class
    for dofn in seen:
        assert beam_dofn_specs.get_dofn_specs(dofn) == beam_dofn_specs._ORIGINAL(dofn)
    assert any(beam_dofn_specs.get_dofn_specs(d)[0] == {COUNT} for d in seen)


def test_an_instance_with_a_bound_method_of_its_own_is_not_answered_from_its_class(installed):
    plain, borrowing = TakesProcessFrom(), TakesProcessFrom(Holder())
    assert userstate.get_dofn_specs(plain) == (set(), set())
    assert userstate.get_dofn_specs(borrowing) == ({COUNT}, {FLUSH})
    assert userstate.get_dofn_specs(borrowing) == beam_dofn_specs._ORIGINAL(borrowing)
    assert userstate.is_stateful_dofn(borrowing) and not userstate.is_stateful_dofn(plain)


def test_answers_are_fresh_sets_and_uninstall_restores_beams_function(installed):
    first = userstate.get_dofn_specs(RunningCount())
    first[0].clear()
    assert userstate.get_dofn_specs(RunningCount()) == ({COUNT}, set())
    assert userstate.get_dofn_specs(Plain()) == (set(), set())
    beam_dofn_specs.uninstall()
    assert userstate.get_dofn_specs is beam_dofn_specs._ORIGINAL

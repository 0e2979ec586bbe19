"""SpanTransform's cache keys follow the span, not the window artifact that holds it."""

import os

from tfx.types import artifact_utils, standard_artifacts

from pipeline.components.span_transform import span_dataset_key
from pipeline.components.span_window import SpanWindow


def _span(tmp_path, number: int) -> standard_artifacts.Examples:
    span = standard_artifacts.Examples()
    span.uri = str(tmp_path / f"spanned-{number}")
    span.span = number
    span.split_names = artifact_utils.encode_split_names(["train", "eval"])
    for split in ("train", "eval"):
        os.makedirs(f"{span.uri}/Split-{split}")
        (tmp_path / f"spanned-{number}" / f"Split-{split}" / "data.gz").write_bytes(b"")
    return span


def _window(tmp_path, name: str, spans: list, size: int) -> str:
    window = standard_artifacts.Examples()
    window.uri = str(tmp_path / name)
    SpanWindow.EXECUTOR_SPEC.executor_class().Do(
        {"examples": spans}, {"window": [window]}, {"spans": size})
    return window.uri


def test_a_span_keeps_its_key_as_it_ages_through_the_window(tmp_path):
    one, two, three = (_span(tmp_path, n) for n in (1, 2, 3))
    run_2 = _window(tmp_path, "window-run-2", [one, two], 3)
    run_3 = _window(tmp_path, "window-run-3", [one, two, three], 3)
    key = lambda uri, split: span_dataset_key(f"{uri}/Split-{split}/*")  # noqa: E731
    # Span 2 is the newest (train_0) in run 2 and one older (train_1) in run 3: same key,
    # so run 3 finds span 2's analyzer results in run 2's cache.
    assert key(run_2, "train_0") == key(run_3, "train_1")
    assert key(run_2, "train_1") == key(run_3, "train_2")  # span 1
    assert key(run_2, "train_0").startswith("span-2-")
    assert len({key(run_3, s) for s in ("train_0", "train_1", "train_2")}) == 3
    # A window with fewer spans than its size: the empty split keeps TFX's own key.
    assert key(run_2, "train_2") is None
    assert key(run_2, "eval") is None  # evaluated, never analysed


def test_a_re_ingested_span_is_a_new_key(tmp_path):
    first = _span(tmp_path, 4)
    again = standard_artifacts.Examples()
    again.uri, again.span = str(tmp_path / "spanned-4-again"), 4
    again.split_names = first.split_names
    for split in ("train", "eval"):
        os.makedirs(f"{again.uri}/Split-{split}")
    before = _window(tmp_path, "before", [first], 1)
    after = _window(tmp_path, "after", [again], 1)
    assert span_dataset_key(f"{before}/Split-train_0/*") != \
        span_dataset_key(f"{after}/Split-train_0/*")


def test_files_outside_a_window_keep_tfxs_key(tmp_path):
    assert span_dataset_key(str(tmp_path / "Split-train" / "*")) is None


def test_a_mark_changes_the_keys_and_a_removal_reaches_a_job_compiled_before_it(tmp_path):
    """The analyzer cache of a span is keyed by the marks its rows were cleaned of: a new
    mark on an older span is analysed again without the marked rows. And the control
    folder decides which marks hold when a step runs: a job compiled while a mark was
    active (its marks parameter) stops honouring it once it is removed."""
    from control import marks
    from pipeline.components import contamination

    control = str(tmp_path / "control")
    one = _span(tmp_path, 1)
    clean = _window(tmp_path, "clean", [one], 1)
    mark = marks.add(control, 0, 10, "trip_start_timestamp", "a broken sensor")
    compiled = marks.to_json(marks.active(control))  # what a job compiled now carries
    window = standard_artifacts.Examples()
    window.uri = str(tmp_path / "marked")
    SpanWindow.EXECUTOR_SPEC.executor_class().Do(
        {"examples": [one]}, {"window": [window]},
        {"spans": 1, "marks": compiled, "control_dir": control})
    assert span_dataset_key(f"{clean}/Split-train_0/*") != \
        span_dataset_key(f"{window.uri}/Split-train_0/*")
    assert [m.id for m in contamination.active(compiled, control)] == [mark.id]
    marks.remove(control, mark.id, "the sensor was fine")
    assert contamination.active(compiled, control) == []
    assert [m.id for m in contamination.active(compiled, "")] == [mark.id]

"""OneReadTransform reads the splits it analyses as one dataset when one pattern holds
exactly their files, and keeps TFX's datasets otherwise."""

import os

from tfx.proto import example_gen_pb2

from pipeline.components.one_read_transform import _OneReadProcessor, one_pattern

FORMAT = example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE


def _window(tmp_path, splits: list[str]) -> str:
    for split in splits:
        os.makedirs(tmp_path / f"Split-{split}")
        for part in range(2):
            (tmp_path / f"Split-{split}" / f"part-{part}.gz").write_bytes(b"")
    return str(tmp_path)


def test_one_pattern_holds_exactly_the_analysed_splits(tmp_path):
    window = _window(tmp_path, ["train_0", "train_1", "train_10", "eval"])
    patterns = lambda *s: [f"{window}/Split-{x}/*" for x in s]  # noqa: E731
    assert one_pattern(patterns("train_0", "train_1", "train_10")) == \
        f"{window}/Split-train_*/*"
    assert one_pattern(patterns("eval", "train_0", "train_1", "train_10")) == \
        f"{window}/Split-*/*"
    # A pattern that would also read a split not analysed: none.
    assert one_pattern(patterns("eval", "train_0")) is None
    assert one_pattern(patterns("train_0", "train_1")) is None  # train_10 would be read
    assert one_pattern(patterns("train_0")) is None  # one split is one read already
    assert one_pattern([f"{window}/Split-eval/*", f"{tmp_path}/other/Split-eval/*"]) is None


def test_the_refit_s_splits_are_one_dataset_and_a_cached_analysis_keeps_tfx_s(tmp_path):
    window = _window(tmp_path, ["train_0", "eval"])
    patterns = [f"{window}/Split-eval/*", f"{window}/Split-train_0/*"]
    formats = ["tfrecords_gzip"] * 2
    one = _OneReadProcessor()._MakeDatasetList(patterns, formats, FORMAT, None, True)
    assert [d.file_pattern for d in one] == [f"{window}/Split-*/*"]
    # With an analyzer cache (not joint) each split stays its own dataset, its own key.
    kept = _OneReadProcessor()._MakeDatasetList(patterns, formats, FORMAT, None, False)
    assert sorted(d.file_pattern for d in kept) == sorted(patterns)

"""Spans as TFX's span resolvers need them: SpanExamples, and SpanWindow for the newest K.

SpanExamples: TFX 1.16's file-based ExampleGen records an artifact's span only as a custom
property when run by the portable (local) runner, while the span resolvers
(`rolling_range`) and StatisticsGen read the `span` property, and see 0 for every span. This
component republishes ExampleGen's output (files hard-linked, no copy) with the property
set, and everything downstream reads it.

SpanWindow: the newest K spans as one Examples artifact, one train split per span age.

Transform in TFX 1.16's portable runners writes a single output artifact even when it is
given several input artifacts, so several spans cannot be handed to it as a list. This
component gathers them instead: split `train_0` is the newest span's train split, `train_1`
the one before, ..., and `eval` the newest span's eval split. Transform analyzes all train
splits together and materializes each one; the Trainer reads them in age order, which is
what recency weights need. The older spans' eval splits are left out: SpanTransform's cache
holds a span's train split analysed, whatever its age in the window. Files are hard-linked
where the filesystem allows (no copy). SOURCES_FILE names the span artifact behind each
train split (SpanTransform's cache keys). A window with fewer spans than K so far gets
empty splits for the missing ages.

With `catalog` (Vertex, where spans cannot be resolved across runs from the metadata store),
SpanExamples records its output in the span catalog and SpanWindow takes the older spans
from it (pipeline/components/span_catalog.py).
"""

import json
import os
import shutil

import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts

from pipeline.components import contamination, span_catalog

EVAL_SPLIT = "eval"
SOURCES_FILE = "sources.json"  # {split: {"span": N, "uri": span artifact}}, beside the splits


def train_splits(spans: int) -> list[str]:
    """Split names, newest span first."""
    return [f"train_{age}" for age in range(spans)]


def _link_or_copy(src: str, dest: str) -> None:
    if "://" not in src and "://" not in dest:
        try:
            os.link(src, dest)
            return
        except OSError:  # another filesystem: copy
            shutil.copyfile(src, dest)
            return
    fileio.copy(src, dest)


def _gather(source_uri: str, split: str, dest_dir: str, prefix: str) -> int:
    fileio.makedirs(dest_dir)
    files = sorted(fileio.glob(os.path.join(source_uri, f"Split-{split}", "*")))
    for path in files:
        name = f"{prefix}-{os.path.basename(path)}" if prefix else os.path.basename(path)
        _link_or_copy(path, os.path.join(dest_dir, name))
    return len(files)


SPLIT_PROPERTY = "split"  # how ExampleGen cut train and eval (ArrowExampleGen's JSON)


def _copy_split(source, dest) -> None:
    if source.has_custom_property(SPLIT_PROPERTY):
        dest.set_string_custom_property(
            SPLIT_PROPERTY, source.get_string_custom_property(SPLIT_PROPERTY))


def _span(artifact) -> int:
    if artifact.has_custom_property("span"):
        return int(artifact.get_int_custom_property("span"))
    return int(artifact.span or 0)


def _gather_split(source_uri: str, split: str, dest_dir: str, prefix: str,
                  marks: list) -> dict[str, int]:
    """A split's files into `dest_dir`: linked, or without marked rows when there are marks."""
    if not marks:
        _gather(source_uri, split, dest_dir, prefix)
        return {}
    files = sorted(fileio.glob(os.path.join(source_uri, f"Split-{split}", "*")))
    return contamination.filter_files(files, dest_dir, marks, prefix)


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


@component
def SpanExamples(
    examples: InputArtifact[standard_artifacts.Examples],
    spanned: OutputArtifact[standard_artifacts.Examples],
    catalog: Parameter[str] = "",
    marks: Parameter[str] = "[]",
    control_dir: Parameter[str] = "",
) -> None:
    spanned.split_names = examples.split_names
    spanned.span = _span(examples)
    if examples.has_custom_property("version"):
        spanned.version = int(examples.get_int_custom_property("version"))
    _copy_split(examples, spanned)
    examples_utils.set_payload_format(spanned, examples_utils.get_payload_format(examples))
    examples_utils.set_file_format(spanned, examples_utils.get_file_format(examples))
    honoured = contamination.active(marks, control_dir)
    left_out: dict[str, int] = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        _add(left_out, _gather_split(examples.uri, split,
                                     os.path.join(spanned.uri, f"Split-{split}"), "", honoured))
    if honoured:
        contamination.record(spanned.uri, honoured, left_out)
    if catalog:
        span_catalog.record(catalog, span_catalog.EXAMPLES, spanned)


@component
def SpanWindow(
    examples: InputArtifact[list[standard_artifacts.Examples]],
    window: OutputArtifact[standard_artifacts.Examples],
    spans: Parameter[int] = 1,
    catalog: Parameter[str] = "",
    marks: Parameter[str] = "[]",
    control_dir: Parameter[str] = "",
) -> None:
    honoured = contamination.active(marks, control_dir)
    left_out: dict[str, int] = {}
    newest_first = sorted(examples, key=lambda a: (a.span or 0, a.id), reverse=True)[:spans]
    newest = newest_first[0]
    if catalog:  # `examples` is this run's span; the older ones are in the catalog
        newest_first = [newest] + span_catalog.newest_before(
            catalog, span_catalog.EXAMPLES, int(newest.span or 0), spans - 1,
            standard_artifacts.Examples)
    splits = train_splits(spans)
    window.split_names = artifact_utils.encode_split_names(splits + [EVAL_SPLIT])
    window.span = newest.span
    examples_utils.set_payload_format(window, examples_utils.get_payload_format(newest))
    examples_utils.set_file_format(window, examples_utils.get_file_format(newest))
    for age, split in enumerate(splits):
        dest = os.path.join(window.uri, f"Split-{split}")
        if age < len(newest_first):
            _add(left_out, _gather_split(newest_first[age].uri, "train", dest,
                                         f"span-{newest_first[age].span}", honoured))
        else:  # not that many spans yet: an empty (valid, gzipped) TFRecord file
            fileio.makedirs(dest)
            with tf.io.TFRecordWriter(os.path.join(dest, "empty.gz"), "GZIP"):
                pass
    _add(left_out, _gather_split(newest.uri, EVAL_SPLIT,
                                 os.path.join(window.uri, f"Split-{EVAL_SPLIT}"),
                                 f"span-{newest.span}", honoured))
    if honoured:
        contamination.record(window.uri, honoured, left_out)
    window.set_string_custom_property(
        "spans", json.dumps([int(a.span or 0) for a in newest_first]))
    _copy_split(newest, window)
    # Which span artifact each split holds, and the marks its rows were cleaned of:
    # SpanTransform keys its analyzer cache by both, so a mark on an older span is analysed
    # again without the marked rows instead of read from the cache with them.
    marks_digest = contamination.digest(honoured)
    sources = {split: {"span": int(a.span or 0), "uri": a.uri, "marks": marks_digest}
               for split, a in zip(splits, newest_first, strict=False)}
    with fileio.open(os.path.join(window.uri, SOURCES_FILE), "w") as f:
        f.write(json.dumps(sources))

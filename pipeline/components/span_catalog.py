"""A catalog of ingested spans under the pipeline root: how spans reach later runs on Vertex.

Locally, the rolling window and the previous span's statistics are resolved from MLMD
(`rolling_range` and channels of every run). TFX's Vertex compiler compiles a resolver only
as "the latest artifact" filter query, so on Vertex SpanExamples and DriftCheck also record
what they produced here, one small JSON file per artifact (GCS has no append, and two runs
may write at once), and SpanWindow and DriftCheck read the older spans from it.

Layout: CATALOG/<kind>/span-<N>/<digest of the artifact URI>.json with
{"span", "version", "uri", "split_names", "recorded"}. A recorded artifact whose files are
gone (a cleaned bucket) is skipped with a warning, never read half.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from tfx.dsl.io import fileio
from tfx.types import artifact as tfx_artifact

EXAMPLES = "examples"
STATISTICS = "statistics"


def record(catalog: str, kind: str, artifact: tfx_artifact.Artifact) -> str:
    """Writes the artifact's entry; returns its path."""
    span = int(artifact.span or 0)
    folder = os.path.join(catalog, kind, f"span-{span}")
    fileio.makedirs(folder)
    path = os.path.join(folder, hashlib.sha256(artifact.uri.encode()).hexdigest()[:16] + ".json")
    version = artifact.get_int_custom_property("version") \
        if artifact.has_custom_property("version") else getattr(artifact, "version", 0) or 0
    entry = {"span": span, "version": int(version), "uri": artifact.uri,
             "split_names": artifact.split_names, "recorded": time.time()}
    with fileio.open(path, "w") as f:
        f.write(json.dumps(entry))
    return path


def _entries(catalog: str, kind: str) -> list[dict]:
    entries = []
    for path in fileio.glob(os.path.join(catalog, kind, "span-*", "*.json")):
        with fileio.open(path) as f:
            entry = json.loads(f.read())
        if not fileio.exists(entry["uri"]):
            logging.warning("span catalog: %s of span %s is gone (%s); skipped", kind,
                            entry["span"], entry["uri"])
            continue
        entries.append(entry)
    return entries


def newest_before(catalog: str, kind: str, span: int, count: int,
                  artifact_type: type[tfx_artifact.Artifact]) -> list[tfx_artifact.Artifact]:
    """The newest artifact of each of the `count` largest spans below `span`, newest span
    first, as artifacts of `artifact_type` (uri, span and split names set)."""
    best: dict[int, dict] = {}
    for entry in _entries(catalog, kind):
        if entry["span"] >= span:
            continue
        key = (entry["version"], entry["recorded"])
        held = best.get(entry["span"])
        if held is None or key > (held["version"], held["recorded"]):
            best[entry["span"]] = entry
    artifacts = []
    for entry in sorted(best.values(), key=lambda e: -e["span"])[:count]:
        artifact = artifact_type()
        artifact.uri = entry["uri"]
        artifact.span = entry["span"]
        artifact.split_names = entry["split_names"]
        artifacts.append(artifact)
    return artifacts

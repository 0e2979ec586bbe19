"""The artifacts of offline Vertex runs, and the filter queries Vertex's resolver tasks run.

On Vertex, a resolver task (e.g. the latest blessed model) is a query over Vertex ML
Metadata: `schema_title="tfx.ModelBlessing" AND state=LIVE AND metadata.blessed.number_value=1`,
newest first. Offline, every output artifact of a task that succeeded is appended to a
JSON-lines file under the offline root, and the same filters run over it, so a second run
resolves the first run's blessed model as Vertex would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

# One clause of a filter: key=value, the value quoted or bare (LIVE, 1).
CLAUSE = re.compile(r'^\s*([\w.]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*$')
TEMPLATE = re.compile(r"\{\{\$\.inputs\.artifacts\['([^']+)'\]\.metadata\['([^']+)'\]\}\}")


class QueryError(ValueError):
    """A resolver filter this store cannot evaluate (said, never guessed)."""


def schema_title(artifact_type: dict[str, Any]) -> str:
    """The title of an ArtifactTypeSchema: `schemaTitle`, or the `title:` of `instanceSchema`."""
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    match = re.search(r"^title:\s*(\S+)", artifact_type.get("instanceSchema", ""), re.M)
    return match.group(1) if match else "system.Artifact"


class ArtifactStore:
    """Append-only, newest last; what Vertex ML Metadata holds for the resolvers."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()  # tasks of one run finish on several threads

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def add(self, artifact: dict[str, Any], *, task: str, job: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {**artifact, "schemaTitle": schema_title(artifact.get("type", {})),
                  "state": "LIVE", "createTime": time.time(), "task": task, "job": job}
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def query(self, filter_text: str, inputs: dict[str, list[dict[str, Any]]],
              limit: int = 1) -> list[dict[str, Any]]:
        """The newest `limit` artifacts matching `filter_text`; templates read `inputs`."""
        try:
            filter_text = TEMPLATE.sub(lambda m: str(_metadata(inputs, m[1], m[2])), filter_text)
        except LookupError:
            return []  # the input the filter names was not resolved: nothing matches
        clauses = []
        for part in re.split(r"\s+AND\s+", filter_text.strip()):
            match = CLAUSE.match(part)
            if not match:
                raise QueryError(f"cannot evaluate resolver filter clause {part!r} "
                                 f"(in {filter_text!r})")
            key, quoted, bare = match.groups()
            clauses.append((key, quoted if quoted is not None else bare))
        found = [r for r in self.records() if all(_matches(r, k, v) for k, v in clauses)]
        return sorted(found, key=lambda r: r["createTime"], reverse=True)[:max(1, limit)]


def _metadata(inputs: dict[str, list[dict[str, Any]]], key: str, name: str) -> Any:
    artifacts = inputs[key]
    if not artifacts:
        raise LookupError(key)
    return artifacts[0].get("metadata", {})[name]


def _matches(record: dict[str, Any], key: str, value: str) -> bool:
    if key == "schema_title":
        return record["schemaTitle"] == value
    if key in ("state", "name", "uri"):
        return str(record.get(key)) == value
    if key.startswith("metadata."):
        parts = key.split(".")
        if len(parts) != 3 or parts[2] not in ("number_value", "string_value", "bool_value"):
            raise QueryError(f"cannot evaluate resolver filter key {key!r}")
        actual = record.get("metadata", {}).get(parts[1])
        if actual is None:
            return False
        if parts[2] == "number_value":
            try:
                return float(actual) == float(value)
            except (TypeError, ValueError):
                return False
        if parts[2] == "bool_value":
            return str(actual).lower() == value.lower()
        return str(actual) == value
    raise QueryError(f"cannot evaluate resolver filter key {key!r}")

"""Where things live: the project, its curated schema, the bundled data, the image's copy of
the project, and every output a run leaves (artifacts, metadata, served versions, rollout
state, the request log). Every command that reads or writes those uses this one layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from settings.framework import Settings, how_to_set, setting

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE_NAME = "schema.pbtxt"
SCHEMA_DIR = PROJECT_ROOT / "schema"
SCHEMA_FILE = SCHEMA_DIR / SCHEMA_FILE_NAME  # the curated schema, reviewed like code
BUNDLED_DATA_DIR = PROJECT_ROOT / "data" / "raw" / "chicago_taxi"  # git-ignored, materialized
# Where the Dockerfile puts the project inside the pipeline image (its WORKDIR).
IMAGE_PROJECT_DIR = "/pipeline"
IMAGE_SCHEMA_DIR = f"{IMAGE_PROJECT_DIR}/schema"


def schema_file(schema_dir: str | Path) -> str:
    """The schema file of a schema directory (local or gs://)."""
    return f"{str(schema_dir).rstrip('/')}/{SCHEMA_FILE_NAME}"


def problem_name(problem_dir: str | Path) -> str:
    """The `name:` of a problem folder's problem.yaml (models/problem.py reads the rest):
    what the pipeline, its outputs and the served model are called. "" when unreadable:
    the command that needs the problem says why."""
    import yaml

    path = f"{str(problem_dir).rstrip('/')}/problem.yaml"
    try:
        if "://" in path:
            import tensorflow as tf

            text = tf.io.gfile.GFile(path).read()
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return ""
    return str(data.get("name") or "") if isinstance(data, dict) else ""


@dataclass
class Layout(Settings):
    """The pipeline's name and every path derived from OUTPUT_ROOT. Paths may be local
    directories or gs:// URIs; local ones are made absolute."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {},
        # On Vertex and Kubeflow every path is a URI the user gives, except the schema,
        # which the image carries.
        "vertex": {"output_root": "", "schema_dir": IMAGE_SCHEMA_DIR},
        "kubeflow": {"output_root": "", "schema_dir": IMAGE_SCHEMA_DIR},
    }
    PROFILE_TITLES: ClassVar[dict[str, str]] = {"vertex": "Vertex", "kubeflow": "Kubeflow"}
    # Made absolute when local: they are recorded in MLMD as execution properties, and
    # `outputs` vs `/abs/outputs` must not look like a change (it would bust the cache).
    PATH_FIELDS: ClassVar[tuple[str, ...]] = (
        "output_root", "pipeline_root", "metadata_path", "serving_dir", "schema_dir", "problem_dir",
        "serving_config_dir", "serving_request_log", "control_dir")

    problem_dir: str = setting(str(SCHEMA_DIR), "problem.yaml and its schema.pbtxt "
                                                "(python -m tools.problem init)")
    pipeline_name: str = setting("", "pipeline name in MLMD (default: the problem's)")
    output_root: str = setting(str(PROJECT_ROOT / "outputs"),
                               "parent of pipeline root, metadata and serving dir")
    pipeline_root: str = setting("", "artifacts (default OUTPUT_ROOT/pipelines/NAME)")
    metadata_path: str = setting("", "MLMD SQLite file (default OUTPUT_ROOT/metadata/NAME.db)")
    serving_dir: str = setting("", "versioned dir TF Serving watches "
                                   "(default OUTPUT_ROOT/serving/NAME)")
    schema_dir: str = setting("", "curated schema directory (default: PROBLEM_DIR)")
    serving_model_name: str = setting("", "model name in TF Serving URLs (default PIPELINE_NAME)")
    serving_config_dir: str = setting("", "models.config and rollout state "
                                          "(default OUTPUT_ROOT/tf_serving/NAME)")
    serving_request_log: str = setting("", "local server's sampled request log (JSONL) "
                                           "(default OUTPUT_ROOT/serving_logs/NAME/requests.jsonl)")
    control_dir: str = setting("", "the audit log of what people decided: pauses, "
                                   "contamination marks, approvals "
                                   "(default OUTPUT_ROOT/control/NAME)")

    def derive(self) -> None:
        for name in self.PATH_FIELDS:
            value = getattr(self, name)
            if value and "://" not in value and not (
                    name == "schema_dir" and value.startswith(IMAGE_PROJECT_DIR + "/")):
                setattr(self, name, os.path.abspath(value))
        self.pipeline_name = self.pipeline_name or problem_name(self.problem_dir) or \
            "taxi-big-tipper"
        self.schema_dir = self._schema_dir()
        out, name = self.output_root.rstrip("/"), self.pipeline_name
        if out:  # without it validate() says what to set
            self.pipeline_root = self.pipeline_root or f"{out}/pipelines/{name}"
            self.metadata_path = self.metadata_path or f"{out}/metadata/{name}.db"
            self.serving_dir = self.serving_dir or f"{out}/serving/{name}"
            self.serving_config_dir = self.serving_config_dir or f"{out}/tf_serving/{name}"
            self.serving_request_log = (self.serving_request_log
                                        or f"{out}/serving_logs/{name}/requests.jsonl")
            self.control_dir = self.control_dir or f"{out}/control/{name}"
        self.serving_model_name = self.serving_model_name or self.pipeline_name

    def problems(self) -> list[str]:
        if not self.pipeline_root or not self.serving_dir:
            return [f"output_root is required ({how_to_set('output_root')})"]
        return []

    def _schema_dir(self) -> str:
        """The problem's own folder, or in a compiled job (whose profile names the image's
        schema folder) the image's copy of it: the image holds the whole project."""
        problem = self.problem_dir
        if not self.schema_dir:
            return problem
        if self.schema_dir == IMAGE_SCHEMA_DIR and "://" not in problem and \
                Path(problem).resolve() != SCHEMA_DIR.resolve():
            try:
                inside = Path(problem).resolve().relative_to(PROJECT_ROOT)
            except ValueError:  # outside the project, so not in the image: read it as given
                return problem
            return f"{IMAGE_PROJECT_DIR}/{inside.as_posix()}"
        return self.schema_dir

    @property
    def schema_file(self) -> str:
        return schema_file(self.schema_dir)

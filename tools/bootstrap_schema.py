"""Infer a fresh schema with TFX's SchemaGen, for review against the curated one.

The pipeline imports schema/schema.pbtxt (ImportSchemaGen); it never infers one. When the
data changes shape, run this, diff its output with schema/schema.pbtxt, and carry over
what should change by hand, with a comment saying why.

    python -m tools.bootstrap_schema --data-root DIR --out DIR
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: TensorFlow's import-time C++ lines go to its log
    from settings import quiet as _quiet

    _quiet.hold_native_stderr()

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pipeline  # noqa: F401  (Keras 2 before TensorFlow)
from settings import quiet
from settings.layout import BUNDLED_DATA_DIR, SCHEMA_DIR, SCHEMA_FILE, Layout


def infer(data_root: str, out_dir: Path) -> Path:
    from tfx import v1 as tfx

    from pipeline import local_beam

    local_beam.install()  # its components run in this process, on the DirectRunner

    with tempfile.TemporaryDirectory() as tmp:
        example_gen = tfx.components.CsvExampleGen(input_base=data_root)
        statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                              infer_feature_shape=True)
        tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
            pipeline_name="bootstrap-schema", pipeline_root=f"{tmp}/root",
            components=[example_gen, statistics_gen, schema_gen],
            metadata_connection_config=tfx.orchestration.metadata
            .sqlite_metadata_connection_config(f"{tmp}/metadata.db"),
            beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
        inferred = next(Path(tmp, "root").glob("SchemaGen/schema/*/schema.pbtxt"))
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(inferred, out_dir / "schema.pbtxt"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bootstrap_schema",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None,
                        help="directory of CSV files (default: the bundled sample, "
                             "materialized if needed)")
    parser.add_argument("--out", type=Path, required=True,
                        help="where to write schema.pbtxt (never the curated schema/ dir)")
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.out.resolve() == SCHEMA_DIR.resolve():
        print("bootstrap_schema: refusing to overwrite the curated schema/; write elsewhere "
              "and diff.", file=sys.stderr)
        return 1
    if args.data_root is None:
        from data import bundled

        bundled.materialize()
        args.data_root = str(BUNDLED_DATA_DIR)
    root = Path(args.data_root)
    if not root.is_dir() or not any(p.is_file() for p in root.iterdir()):
        print(f"bootstrap_schema: no files in {args.data_root}; give --data-root a "
              "directory of CSV files with a header row", file=sys.stderr)
        return 2
    print("bootstrap_schema: inferring with CsvExampleGen, StatisticsGen and SchemaGen ...",
          flush=True)
    path, error, log_file = quiet.run_quietly(
        lambda: infer(args.data_root, args.out), args, Layout.load().output_root,
        "bootstrap_schema", own=("tools",), own_format="%(message)s",
        expected=(RuntimeError, OSError, ValueError))
    if error is not None:
        print(f"bootstrap_schema: {quiet.one_line(error)} (logs: {log_file})", file=sys.stderr)
        return 1
    print(f"inferred schema written to {path}\n"
          f"review it with: diff {SCHEMA_FILE} {path}\nlogs: {log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

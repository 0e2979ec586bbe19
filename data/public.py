"""Public tables that ship inside installed packages, written out as CSV: problems nobody
here tuned to, one per task, for the tests and the README's "Your own problem".

  penguins       multiclass (species: 0, 1, 2), 334 rows: TFX's own penguin example data
                 (tfx/components/testdata/penguin, TFRecords of the processed table)
  breast_cancer  binary (diagnosis: malignant / benign), 569 rows: scikit-learn's copy of
                 the Wisconsin diagnostic data
  diabetes       regression (progression, a year on), 442 rows: scikit-learn's diabetes
                 data, unscaled

    python -m data.public materialize [NAME ...]    # into data/raw/public/NAME/NAME.csv

Nothing is committed: each is read from the installed package, as the taxi sample is.
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: TensorFlow's import-time C++ lines go to its log
    from settings import quiet as _quiet

    _quiet.hold_native_stderr()

import argparse
import csv
import sys
from pathlib import Path

from settings.layout import PROJECT_ROOT

ROOT = PROJECT_ROOT / "data" / "raw" / "public"
# name -> (label column, task)
TABLES = {"penguins": ("species", "multiclass"), "breast_cancer": ("diagnosis", "binary"),
          "diabetes": ("progression", "regression")}


def _penguins() -> tuple[list[str], list[list]]:
    import tensorflow as tf
    import tfx

    folder = Path(tfx.__file__).parent / "components" / "testdata" / "penguin" / "data"
    files = sorted(str(p) for p in folder.glob("Split-*/*.gz"))
    rows, names = [], None
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        values = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            value = list(getattr(feature, kind).value)
            values[name] = value[0] if value else ""
        names = names or sorted(values, key=lambda n: (n != "species", n))
        rows.append([values.get(n, "") for n in names])
    return names, rows


def _breast_cancer() -> tuple[list[str], list[list]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names] + ["diagnosis"]
    rows = [[*x.tolist(), data.target_names[y]] for x, y in zip(data.data, data.target,
                                                                 strict=True)]
    return names, rows


def _diabetes() -> tuple[list[str], list[list]]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    names = list(data.feature_names) + ["progression"]
    rows = [[*x.tolist(), float(y)] for x, y in zip(data.data, data.target, strict=True)]
    return names, rows


READERS = {"penguins": _penguins, "breast_cancer": _breast_cancer, "diabetes": _diabetes}


def materialize(name: str, root: Path = ROOT) -> Path:
    """data/raw/public/NAME/NAME.csv (written once; a folder of one CSV, as ExampleGen
    reads a data root)."""
    if name not in READERS:
        raise KeyError(f"no public table {name!r}; known: {', '.join(READERS)}")
    path = root / name / f"{name}.csv"
    if path.is_file():
        return path
    names, rows = READERS[name]()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(rows)
    partial.rename(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.public", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["materialize"])
    parser.add_argument("names", nargs="*", default=list(READERS))
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            print(materialize(name))
        except KeyError as e:
            print(f"data.public: {e.args[0]}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

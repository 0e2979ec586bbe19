#!/usr/bin/env python
"""A group effect: what a random split reports and what a split by group reports.

Simulated trips (data/simulator.py) where each of N companies tips at its own rate and that
is the only signal; the real ArrowExampleGen executor splits them twice, by hash of the row
(random) and by hash of `company` (`--partition-feature company`); the same model
(models/model.py, a real Transform of the train rows) is trained on each train split and
scored on its eval split. The random split lets the model learn each company's rate and
scores it on the same companies; the split by company scores it on companies it never saw,
as production will for a new company. The README's figures come from this command:

    python benchmarks/group_split.py [--rows 4000] [--companies 40] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)


def split_examples(data: Path, out: Path, by_time=None, partition: str = "") -> dict:
    """The real ArrowExampleGen executor on `data` (3:1 hash buckets, or by `by_time`),
    rows sharing `partition`'s value on one side; returns the split it recorded."""
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as keys
    from tfx.utils import proto_utils

    from pipeline.components import arrow_example_gen as A
    from settings.layout import SCHEMA_FILE

    split = example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=3),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)],
        partition_feature_name=partition)
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    component = A.ArrowExampleGen(input_base=str(data), schema_file=str(SCHEMA_FILE),
                                  by_time=by_time)
    A.Executor().Do({}, {keys.EXAMPLES_KEY: [examples]}, {
        keys.INPUT_BASE_KEY: str(data),
        keys.INPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="single_split", pattern="*")])),
        keys.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Output(
            split_config=split)),
        keys.CUSTOM_CONFIG_KEY: component.exec_properties[keys.CUSTOM_CONFIG_KEY]})
    return json.loads(examples.get_string_custom_property("split"))


def split_rows(examples: Path, split: str) -> list[dict]:
    """A split's raw rows as csv.DictReader gives them (strings, '' for absent)."""
    import tensorflow as tf

    out = []
    for record in tf.data.TFRecordDataset(sorted(map(str, (examples / f"Split-{split}")
                                                     .iterdir())), compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        row = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            value = values[0] if values else ""
            row[name] = value.decode() if isinstance(value, bytes) else str(value)
        out.append(row)
    return out


def eval_auc(examples: Path, work: Path, steps: int, seed: int = 1) -> float:
    """The model trained on `examples`' train split (its own Transform), AUC on eval."""
    from models.sample_transform import instance, raw_rows_auc, train_and_export, write_transform

    root = write_transform(work, [instance(r) for r in split_rows(examples, "train")])
    model = train_and_export(root, work / "model", steps=steps, seed=seed, batch_size=64)
    return raw_rows_auc(model, split_rows(examples, "eval"))


def measure(work: Path, rows: int = 4000, companies: int = 40, steps: int = 400) -> dict:
    from data import simulator

    simulator.write_span(work / "spans", 1, rows, seed=3, changes=[
        simulator.parse_change(f"group_effect={companies}:1.0")])
    data = work / "spans" / "span-1"
    result = {"rows": rows, "companies": companies, "steps": steps}
    for name, partition in (("random", ""), ("by_company", "company")):
        split_examples(data, work / name, partition=partition)
        result[f"{name}_auc"] = round(eval_auc(work / name, work / f"{name}-model", steps), 4)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--companies", type=int, default=40)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)  # tf.Transform's notes on its formats
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(tmp), args.rows, args.companies, args.steps)
    print(f"{result['rows']} simulated trips, {result['companies']} companies, each its own "
          f"tip rate (the only signal); {result['steps']} steps")
    print(f"  random split (rows by hash):     eval AUC {result['random_auc']:.2f}")
    print(f"  split by company (--partition-feature company): eval AUC "
          f"{result['by_company_auc']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Training input: examples/s of the Trainer's tf.data input vs the read-and-parse limit.

All read the same gzipped TFRecords (what the newest Trainer run read, in MLMD, or
--examples/--transform-graph: Transform's written rows, or raw rows that go through the
Transform graph a batch at a time), in batches of the Trainer's size:
  limit    the fastest plain pipeline: parallel reads, batch, then one vectorised parse (and
           transform) per batch on parallel threads, prefetch; nothing else. From disk (gunzip every
           pass) and from memory (records cached after one pass)
  trainer  models.model.input_fn as the Trainer calls it (cache, shuffle, repeat, the same
           batch-then-parse): its first pass, then --passes passes from its cache
Printed and written as JSON.

    python benchmarks/training_input.py [--passes 20] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402,F401  (Keras 2 before TensorFlow)


def examples_per_second(dataset, batches: int) -> tuple[float, int]:
    from models import features as F

    rows, started = 0, time.perf_counter()
    for batch in dataset.take(batches):
        rows += int(batch[1].shape[0]) if isinstance(batch, tuple) else \
            int(batch[F.LABEL_XF].shape[0])
    return rows / (time.perf_counter() - started), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transform-graph", help="Transform's graph dir (default: newest)")
    parser.add_argument("--examples", help="the Trainer's examples dir (default: newest)")
    parser.add_argument("--passes", type=int, default=20, help="passes over the train split")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "input")
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tensorflow_transform as tft

    from models.model import examples_are_raw, input_fn, transformed_parser
    from pipeline import configs
    from tools.ablation import latest_training_inputs

    graph, examples = (args.transform_graph, args.examples) if args.transform_graph and \
        args.examples else latest_training_inputs(configs.load(env={}).metadata_path)
    pattern = os.path.join(examples, "Split-train*", "*")
    files = sorted(tf.io.gfile.glob(pattern))
    output = tft.TFTransformOutput(graph)
    transformed = transformed_parser(output, examples_are_raw(files))
    rows = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    batches = args.passes * -(-rows // args.batch_size)

    def parse(records):
        return records.batch(args.batch_size).map(
            transformed,
            num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    one_pass = -(-rows // args.batch_size)
    reads = tf.data.TFRecordDataset(files, compression_type="GZIP",
                                    num_parallel_reads=tf.data.AUTOTUNE)
    # From disk (gunzip each pass), and from memory (what a cache can reach at best).
    limit_rate, _ = examples_per_second(parse(reads.repeat(args.passes)), batches)
    cached = reads.cache()
    examples_per_second(parse(cached), one_pass)  # fills the cache
    memory_rate, _ = examples_per_second(parse(cached.repeat(args.passes)), batches)

    trainer = input_fn([pattern], output, args.batch_size, seed=1)
    first_rate, _ = examples_per_second(trainer, one_pass)  # its first pass fills its cache
    trainer_rate, _ = examples_per_second(trainer, batches)

    result = {"train_rows": rows, "passes": args.passes, "batch_size": args.batch_size,
              "limit_from_disk_examples_per_s": round(limit_rate),
              "limit_from_memory_examples_per_s": round(memory_rate),
              "trainer_first_pass_examples_per_s": round(first_rate),
              "trainer_examples_per_s": round(trainer_rate),
              "trainer_vs_memory_limit": round(trainer_rate / memory_rate, 3),
              "examples": examples}
    print(f"\n{rows:,} train rows x {args.passes} passes, batches of {args.batch_size}")
    print(f"read-and-parse limit, from disk:    {limit_rate:>10,.0f} examples/s")
    print(f"read-and-parse limit, from memory:  {memory_rate:>10,.0f} examples/s")
    print(f"Trainer's input_fn, first pass:     {first_rate:>10,.0f} examples/s "
          f"({first_rate / limit_rate:.0%} of the disk limit)")
    print(f"Trainer's input_fn, after it:       {trainer_rate:>10,.0f} examples/s "
          f"({result['trainer_vs_memory_limit']:.0%} of the memory limit; shuffled)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_input.json").write_text(json.dumps(result, indent=2))
    print(f"written: {args.out / 'training_input.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

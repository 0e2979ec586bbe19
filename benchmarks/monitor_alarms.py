#!/usr/bin/env python
"""How often the monitor's alarms fire on clean batches, and how often they catch real shifts.

The bundled rows are shuffled and split as ExampleGen splits them: three quarters are the
training rows, one quarter held out (a fresh split for each clean batch, one fixed split
for the shifted ones). Each batch is drawn from the held-out rows, optionally shifted, and
checked by the monitor's feature checks against the training rows. The label check scores
the batch with a model fitted on the training rows (scikit-learn's gradient-boosted trees
on the numeric columns and the payment type: the quality alarm needs an informative model,
not this project's) and compares its AUC with its AUC on all held-out rows.

    python benchmarks/monitor_alarms.py [--batches 100] [--sizes 200,600,2000]

Figures go to outputs/bench/monitor_alarms.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from data import bundled  # noqa: E402
from models import features as F  # noqa: E402
from monitoring import feature_checks, quality  # noqa: E402

NUMBERS = ("fare", "trip_miles", "trip_seconds", "trip_start_hour", "pickup_latitude",
           "pickup_longitude", "dropoff_latitude", "dropoff_longitude")


def label(row: dict) -> int:
    return F.raw_label(row)


def scaled(column: str, factor: float):
    def change(row: dict, rng: random.Random) -> dict:
        value = row[column]
        return {**row, column: "" if value == "" else f"{float(value) * factor:.2f}"}
    return change


def sometimes(column: str, value: str, share: float):
    def change(row: dict, rng: random.Random) -> dict:
        return {**row, column: value} if rng.random() < share else row
    return change


SHIFTS = {
    "fare x1.5": scaled("fare", 1.5),
    "fare x3": scaled("fare", 3.0),
    "trip_miles x0.3": scaled("trip_miles", 0.3),
    "company absent on half": sometimes("company", "", 0.5),
    "unseen payment type on 20%": sometimes("payment_type", "Bitcoin", 0.2),
}
FLIPS = {"labels flipped on 20%": 0.2, "labels flipped on 40%": 0.4}


def matrix(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r[c]) if r[c] != "" else np.nan for c in NUMBERS]
                     + [float(r["payment_type"] == "Credit Card")] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100, help="batches per row of the table")
    parser.add_argument("--sizes", default="200,600,2000", help="clean batch sizes")
    parser.add_argument("--shift-size", type=int, default=600, help="rows of a shifted batch")
    parser.add_argument("--clean-only", action="store_true", help="only the false-alarm rows")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "monitor_alarms.json"))
    args = parser.parse_args(argv)

    from sklearn.ensemble import HistGradientBoostingClassifier

    _, all_rows = bundled.read_rows(bundled.materialize())
    F.load_schema()  # imports TFDV once, outside the timings
    splits = {}

    def split(seed: int):
        """Training rows, their baseline and model; held-out rows with scores and labels."""
        if seed not in splits:
            rows = list(all_rows)
            random.Random(seed).shuffle(rows)
            cut = len(rows) * 3 // 4
            training, held_out = rows[:cut], rows[cut:]
            model = HistGradientBoostingClassifier(random_state=0).fit(
                matrix(training), [label(r) for r in training])
            scores = model.predict_proba(matrix(held_out))[:, 1]
            labels = np.array([label(r) for r in held_out])
            splits.clear()  # one split in memory at a time
            splits[seed] = (feature_checks.Baseline(training, F.load_schema()), held_out,
                            scores, labels, quality.auc(labels, scores))
        return splits[seed]

    start = time.time()
    *_, held_out, _, _, blessed_auc = split(0)
    print(f"first split: {time.time() - start:.1f} s; model AUC on its {len(held_out)} "
          f"held-out rows (the 'evaluation'): {blessed_auc:.3f}")

    def run(name: str, size: int, change=None, flip: float = 0.0) -> dict:
        """Clean batches each come from their own split (a fresh shuffle, baseline and model):
        batches drawn from one held-out pool share its own deviation from training, so their
        alarms would not be independent. Shifted batches share split 0."""
        alarmed, by_check, seconds = 0, {}, []
        for seed in range(args.batches):
            baseline, held_out, scores, labels, blessed_auc = split(
                seed if name == "clean" else 0)
            rng = random.Random(seed)
            picks = [rng.randrange(len(held_out)) for _ in range(size)]
            batch = [held_out[i] for i in picks]
            if change:
                batch = [change(r, rng) for r in batch]
            t = time.time()
            checks = baseline.check(batch, other_checks=1)
            findings = [f"{c.feature} {c.check}" for c in checks if c.alarm]
            y = np.array([1 - labels[i] if rng.random() < flip else labels[i] for i in picks])
            served = quality.estimate(y, scores[picks], seed=seed, draws=300)["auc"]
            alpha = 0.05 / (sum(1 for c in checks if c.check != "invalid") + 1)
            if quality.auc_drop(served, blessed_auc, alpha=alpha, min_drop=0.02):
                findings.append("quality auc")
            seconds.append(time.time() - t)
            alarmed += bool(findings)
            for f in findings:
                by_check[f] = by_check.get(f, 0) + 1
        top = dict(sorted(by_check.items(), key=lambda kv: -kv[1])[:4])
        print(f"{name:<28} {size:>5} rows  {alarmed:>3}/{args.batches} batches alarmed  "
              f"{np.mean(seconds):.2f} s/batch  {top}")
        return {"case": name, "rows": size, "batches": args.batches, "alarmed": alarmed,
                "by_check": by_check, "seconds_per_batch": round(float(np.mean(seconds)), 3)}

    results = [run("clean", int(n)) for n in args.sizes.split(",")]
    if not args.clean_only:
        results += [run(name, args.shift_size, change) for name, change in SHIFTS.items()]
        results += [run(name, args.shift_size, flip=share) for name, share in FLIPS.items()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results}, indent=1))
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Leave-one-out feature ablation: how much AUC the model loses without each feature.

    python -m tools.ablation                      # the latest Transform output in MLMD
    python -m tools.ablation --by group --steps 600 --workers 2

Each job trains the model of models/model.py on the same Transform output, with one
feature (or declared group, features.GROUPS) blanked: its transformed inputs are replaced
by a constant (0 for z-scored values, the mean; index 0 for categories). Blanking rather
than rebuilding the model without the input keeps the architecture, the initial weights
and the batch order identical across jobs (same seed), so the AUC change measures the
feature's information, not a different random start. A *noise probe*, a random id per
example (one id per PROBE_ROWS_PER_ID train rows, like a trip id leaking into the features),
is trained with every job and ablated like a feature. The model can only memorise it, so
removing it helps: a feature ranked near it carries no signal this model can use.

Jobs run in parallel processes (one per core by default), each with its share of the
cores' threads; the cost (wall time, job seconds) is reported with the ranking.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from settings import quiet

log = logging.getLogger(__name__)

NOISE_PROBE = "noise_probe"
PROBE_ROWS_PER_ID = 4  # train rows per probe id: few enough that the model can memorise them
BASELINE = "(none)"


@dataclass
class Job:
    unit: str  # what is blanked: a feature, a group, NOISE_PROBE or BASELINE
    inputs: list[str]  # model inputs blanked
    data: str  # .npz with the parsed train/eval arrays
    hparams: dict
    steps: int
    seed: int
    threads: int


@dataclass
class Result:
    unit: str
    auc: float
    seconds: float


def units(by: str) -> dict[str, list[str]]:
    """Ablation units -> the model inputs each blanks (GEO features have two)."""
    from models import features as F

    def inputs_of(feature: F.Feature) -> list[str]:
        return [feature.transformed] + ([feature.bucket_name] if feature.kind is F.Kind.GEO
                                        else [])

    if by == "feature":
        out = {f.name: inputs_of(f) for f in F.FEATURES}
    elif by == "group":
        out = {group: [i for name in names for i in inputs_of(F.BY_NAME[name])]
               for group, names in F.GROUPS.items()}
    else:
        raise ValueError(f"--by must be feature or group, got {by!r}")
    return {**out, NOISE_PROBE: [probe().transformed]}


def probe(ids: int = 1):
    """The noise probe: a random id per example (`ids` of them), embedded like any
    categorical feature. Like a trip id leaking into the features, it can only be memorised."""
    from models import features as F

    return F.Feature(NOISE_PROBE, F.Kind.INT_CATEGORY, "int", size=ids, embedding_dim=16)


def load_arrays(transform_graph: str, examples: str, out: Path, max_rows: int, seed: int,
                marks: list | None = None) -> Path:
    """Transformed train (every Split-train*) and eval rows, parsed once into one .npz the
    workers share, with the noise probe added to both. `examples` holds Transform's
    written rows or raw rows, which go through the graph here as the Trainer does; the
    rows contamination `marks` cover (those in force now, some perhaps made after the run
    that wrote `examples`) are left out first."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import features as F
    from models.model import examples_are_raw, model_input_names, transformed_parser
    from pipeline.components import contamination

    output = tft.TFTransformOutput(transform_graph)
    left_out: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, pattern in (("train", "Split-train*"), ("eval", "Split-eval")):
        files = sorted(tf.io.gfile.glob(os.path.join(examples, pattern, "*")))
        if not files:
            raise FileNotFoundError(f"no examples in {examples}/{pattern}")
        raw = examples_are_raw(files)
        if marks and not raw:
            raise ValueError(f"{examples} holds transformed rows, which keep no raw columns "
                             "to apply the contamination marks to: rerun the pipeline "
                             "(its Trainer reads raw rows by default), then ablate")
        parse = transformed_parser(output, raw)
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        if max_rows:
            records = records.take(max_rows)
        parts = []
        for batch in records.batch(8192).as_numpy_iterator():
            if marks:
                batch = batch[~contamination.left_out(list(batch), marks, left_out)]
            if len(batch):
                parts.append(parse(tf.constant(batch)))
        for name in [*model_input_names(), F.LABEL_XF]:
            arrays[f"{split}/{name}"] = np.concatenate(
                [part[name].numpy().reshape(-1) for part in parts])
        rows = len(arrays[f"{split}/{F.LABEL_XF}"])
        if split == "train":
            ids = max(10, rows // PROBE_ROWS_PER_ID)
        arrays[f"{split}/{probe().transformed}"] = rng.integers(0, ids, rows)
    if any(left_out.values()):
        log.warning("left out %s rows under contamination marks (%s)",
                    sum(left_out.values()), ", ".join(f"{k}: {v}" for k, v in left_out.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return out


def run_job(job: Job) -> Result:
    """One training run with `job.inputs` blanked; AUC on the eval split. (A spawned worker
    imports this module, so the `models` package has selected Keras 2 by now.)"""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(job.threads)
    tf.config.threading.set_inter_op_parallelism_threads(job.threads)
    from sklearn.metrics import roc_auc_score

    from models import features as F
    from models.model import build_model

    started = time.monotonic()
    data = np.load(job.data)

    def split(name: str) -> tuple[dict, np.ndarray]:
        features = {k.split("/", 1)[1]: data[k] for k in data.files
                    if k.startswith(f"{name}/") and not k.endswith(f"/{F.LABEL_XF}")}
        for blank in job.inputs:
            features[blank] = np.zeros_like(features[blank])
        return features, data[f"{name}/{F.LABEL_XF}"]

    train_x, train_y = split("train")
    eval_x, eval_y = split("eval")
    tf.keras.utils.set_random_seed(job.seed)
    probe_ids = int(data[f"train/{probe().transformed}"].max()) + 1
    model = build_model(job.hparams, extra=(probe(probe_ids),))
    batches = tf.data.Dataset.from_tensor_slices((train_x, train_y)).shuffle(
        len(train_y), seed=job.seed).repeat().batch(job.hparams["batch_size"])
    model.fit(batches, steps_per_epoch=job.steps, epochs=1, verbose=0)
    predicted = model.predict(eval_x, batch_size=4096, verbose=0)
    return Result(job.unit, float(roc_auc_score(eval_y, predicted)),
                  round(time.monotonic() - started, 1))


def ablate(transform_graph: str, examples: str, out_dir: Path, by: str = "feature",
           steps: int = 500, workers: int = 0, seed: int = 42, max_rows: int = 0,
           hparams: dict | None = None, marks: list | None = None) -> dict:
    """Runs the baseline and every leave-one-out job; returns the ranked result."""
    from models.model import hparams as merged_hparams

    workers = workers or os.cpu_count() or 1
    data = load_arrays(transform_graph, examples, out_dir / "arrays.npz", max_rows, seed,
                       marks)
    threads = max(1, (os.cpu_count() or 1) // workers)
    hp = merged_hparams(hparams)
    jobs = [Job(unit, inputs, str(data), hp, steps, seed, threads)
            for unit, inputs in {BASELINE: [], **units(by)}.items()]
    started = time.monotonic()
    log.info("ablation: %d jobs (%d steps each) on %d worker(s)", len(jobs), steps, workers)
    results = []
    # spawn: TensorFlow must not be forked once it has started threads.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for result in pool.imap_unordered(run_job, jobs):
            results.append(result)
            log.info("ablation: %-22s AUC %.4f (%.0f s) [%d/%d]", result.unit, result.auc,
                     result.seconds, len(results), len(jobs))
    wall = time.monotonic() - started
    baseline = next(r for r in results if r.unit == BASELINE)
    ranked = sorted((r for r in results if r.unit != BASELINE),
                    key=lambda r: baseline.auc - r.auc, reverse=True)
    return {
        "by": by, "steps": steps, "seed": seed, "workers": workers,
        "baseline_auc": baseline.auc,
        "ranking": [{"unit": r.unit, "inputs": units(by)[r.unit], "auc": round(r.auc, 5),
                     "auc_change": round(r.auc - baseline.auc, 5), "seconds": r.seconds}
                    for r in ranked],
        "cost": {"wall_seconds": round(wall, 1),
                 "job_seconds": round(sum(r.seconds for r in results), 1),
                 "jobs": len(results)},
        "results": [asdict(r) for r in results],
        "transform_graph": transform_graph, "examples": examples,
    }


def ranking_png(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reporting import views

    ranking = result["ranking"][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ranking) + 1.2))
    colors = ["#999999" if r["unit"] == NOISE_PROBE else "#3060a0" for r in ranking]
    ax.barh([r["unit"] for r in ranking], [-r["auc_change"] for r in ranking], color=colors)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xscale("symlog", linthresh=1e-3)  # one feature can dwarf the rest: keep both legible
    ax.set_xlabel(f"AUC lost without it (baseline {result['baseline_auc']:.4f})")
    fig.tight_layout()
    return views.figure_png(fig)


def write_report(result: dict, out_dir: Path) -> Path:
    import pandas as pd

    from reporting import views

    frame = pd.DataFrame(result["ranking"])[["unit", "auc", "auc_change", "seconds"]]
    cost = result["cost"]
    text = (f"Each row: the model trained {result['steps']} steps with that "
            f"{result['by']} blanked, AUC on the eval split. The noise probe is a random id "
            f"the model can only memorise: what ranks near it carries no usable signal. "
            f"Cost: {cost['jobs']} jobs, {cost['job_seconds']:.0f} job-seconds in "
            f"{cost['wall_seconds']:.0f} s on {result['workers']} worker(s).")
    (out_dir / "ablation.json").write_text(json.dumps(result, indent=2))
    return views.write_page(out_dir / "ablation.html", "Leave-one-out feature ablation", [
        ("Ranking", f"<p>{text}</p>" + views.img(ranking_png(result), "AUC change")
         + views.table(frame.set_index("unit"))),
    ])


def latest_training_inputs(metadata_path: str) -> tuple[str, str]:
    """(Transform graph, examples) the newest Trainer run trained on: Transform's written
    rows, or the raw rows when Transform did not write them."""
    from reporting.runs import newest_inputs

    return newest_inputs(metadata_path, "Trainer", ("TransformGraph", "Examples"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--by", choices=("feature", "group"), default="feature",
                        help="blank one feature at a time, or one declared group")
    parser.add_argument("--transform-graph", help="Transform's graph dir (default: the one the "
                                                  "newest Trainer run read)")
    parser.add_argument("--examples", help="the examples dir the Trainer read: Transform's "
                                           "written rows or raw rows (default: newest)")
    parser.add_argument("--steps", type=int, default=500, help="training steps per job")
    parser.add_argument("--workers", type=int, default=0, help="parallel jobs (0 = cores)")
    parser.add_argument("--max-rows", type=int, default=0, help="rows per split (0 = all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None,
                        help="output dir (default OUTPUT_ROOT/ablation)")
    parser.add_argument("--control-dir", default=None,
                        help="whose contamination marks leave rows out, those made since "
                             "the run too (default CONTROL_DIR)")
    quiet.add_arguments(parser)
    args = parser.parse_args(argv)

    from control import marks as control_marks
    from models import problem as P
    from settings.layout import Layout

    try:
        P.binary_only("tools.ablation (the loss in AUC without each feature)")
    except P.ProblemError as e:
        print(f"tools.ablation: {e}", file=sys.stderr)
        return 2
    config = Layout.load(env=os.environ)

    def work():
        graph, examples = (args.transform_graph, args.examples) if args.transform_graph \
            and args.examples else latest_training_inputs(config.metadata_path)
        out = args.out or Path(config.output_root) / "ablation"
        marks = control_marks.active(args.control_dir or config.control_dir)
        return out, ablate(graph, examples, out, by=args.by, steps=args.steps,
                           workers=args.workers, seed=args.seed, max_rows=args.max_rows,
                           marks=marks)

    print("ablation: progress below; every library's log lines go to OUTPUT_ROOT/logs/",
          flush=True)
    done, error, _ = quiet.run_quietly(work, args, config.output_root, "ablation",
                                       ("__main__", "tools.ablation"), "%(asctime)s %(message)s",
                                       (FileNotFoundError, ValueError))
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out, result = done
    print(f"\nbaseline AUC {result['baseline_auc']:.4f}; without each {args.by}:")
    for row in result["ranking"]:
        print(f"  {row['unit']:24} AUC {row['auc']:.4f}  change {row['auc_change']:+.4f}")
    cost = result["cost"]
    print(f"cost: {cost['jobs']} jobs, {cost['job_seconds']:.0f} job-seconds in "
          f"{cost['wall_seconds']:.0f} s on {result['workers']} worker(s)")
    print(f"report: {write_report(result, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

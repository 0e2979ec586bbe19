"""Quality from late labels: AUC, log loss and calibration with bootstrap intervals, and an
alarm when AUC fell significantly below the blessed model's own evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

BOOTSTRAPS = 1000


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half."""
    from scipy.stats import rankdata

    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def calibration_gap(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean prediction - label rate (0 for a calibrated model)."""
    return float(scores.mean() - labels.mean())


METRICS = {"auc": auc, "log loss": log_loss, "calibration gap": calibration_gap}


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float  # 95% bootstrap interval
    high: float
    se: float


def estimate(labels, scores, seed: int = 0, draws: int = BOOTSTRAPS) -> dict[str, Estimate]:
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(labels), size=(draws, len(labels)))
    out = {}
    for name, metric in METRICS.items():
        boot = np.array([metric(labels[i], scores[i]) for i in samples])
        boot = boot[np.isfinite(boot)]
        value = metric(labels, scores)
        low, high = np.quantile(boot, [0.025, 0.975]) if len(boot) else (np.nan, np.nan)
        out[name] = Estimate(value, float(low), float(high),
                             float(boot.std()) if len(boot) else float("nan"))
    return out


def auc_drop(served: Estimate, blessed_auc: float, *, alpha: float, min_drop: float) -> str:
    """The finding when AUC fell below the evaluation's beyond chance and beyond `min_drop`
    ('' when not)."""
    drop = blessed_auc - served.value
    z = drop / served.se if served.se > 0 else 0.0
    if drop >= min_drop and z > norm.ppf(1 - alpha):
        return (f"quality: AUC {served.value:.3f} (95% CI {served.low:.3f}-{served.high:.3f}) "
                f"vs {blessed_auc:.3f} at evaluation; drop {drop:.3f} is {z:.1f} standard "
                f"errors (p = {norm.sf(z):.1g})")
    return ""

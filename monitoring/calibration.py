"""Thresholds that know the batch size: how far a served batch may sit from training by chance.

A distance between a served batch and training means nothing without the batch size: 600
clean rows sit further from training than 60,000 do. Each check here therefore asks the
question an alarm should answer, "would a batch this size, drawn from the training
distribution, be this far from training?", by simulating it: both sides are redrawn from the
training shares (a parametric bootstrap of the two-sample test, so the training sample's own
noise counts too), and the observed distance is compared with the simulated ones.

Served and training counts are always on the same bins (the training deciles, the training
vocabulary), so a batch's own min and max never move the buckets.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DRAWS = 20_000  # simulated batches per check: p-values down to 1/20001
MIN_BEYOND = 10  # simulated batches expected beyond the cut: more draws when alpha is small


@dataclass(frozen=True)
class Calibrated:
    """One check's verdict, with what a person needs to judge it."""

    distance: float  # observed statistic
    threshold: float  # the larger of the calibrated cut at this batch size and the floor
    p_value: float  # share of simulated clean batches at least this far (1/(draws+1) min)
    alarm: bool


def jensen_shannon(train: np.ndarray, served: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence (base 2, 0..1) between count vectors."""
    p = train / np.maximum(train.sum(axis=-1, keepdims=True), 1)
    q = served / np.maximum(served.sum(axis=-1, keepdims=True), 1)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=-1)
    return (kl_p + kl_q) / 2


def share_change(train: np.ndarray, served: np.ndarray) -> np.ndarray:
    """|served share - training share| of bin 0 (e.g. absent values)."""
    return np.abs(_share(served) - _share(train))


def share_rise(train: np.ndarray, served: np.ndarray) -> np.ndarray:
    """served share - training share of bin 0 (one-sided: e.g. unseen values)."""
    return _share(served) - _share(train)


def _share(counts: np.ndarray) -> np.ndarray:
    return counts[..., 0] / np.maximum(counts.sum(axis=-1), 1)


def seed_for(*parts: object) -> int:
    """A fixed seed per check and batch size: the same batch always gets the same verdict."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def calibrate(train: np.ndarray, served: np.ndarray,
              statistic: Callable[[np.ndarray, np.ndarray], np.ndarray], *, alpha: float,
              floor: float, seed: int, draws: int = DRAWS) -> Calibrated:
    """Alarm iff the served counts are further from training than all but `alpha` of simulated
    clean batches of the same size, and at least `floor` away (practical significance: a
    million-row batch must not alarm on trivia)."""
    train = np.asarray(train, dtype=np.int64)
    served = np.asarray(served, dtype=np.int64)
    observed = float(statistic(train[None], served[None])[0])
    n, total = int(served.sum()), int(train.sum())
    if n == 0 or total == 0:
        return Calibrated(observed, floor, 1.0, False)
    shares = (train + 0.5) / (total + 0.5 * len(train))  # no bin is impossible under the null
    # A cut at alpha needs draws beyond it; with too few, no batch could ever alarm.
    draws = max(draws, int(np.ceil(MIN_BEYOND / alpha)))
    rng = np.random.default_rng(seed)
    null = statistic(rng.multinomial(total, shares, size=draws),
                     rng.multinomial(n, shares, size=draws))
    p_value = (1 + int((null >= observed - 1e-12).sum())) / (draws + 1)
    threshold = max(float(np.quantile(null, 1 - alpha)), floor)
    return Calibrated(observed, threshold, p_value, p_value <= alpha and observed >= floor)

"""Served rows against the training rows of the model that answered them, feature by feature.

Per feature, on the training data's own bins (models/features.py says which kind):
  distribution  present values on the training deciles (numbers) or the training vocabulary
                (categories; values under 0.5% of training pooled as "rare"), Jensen-Shannon
  missing       share of rows without a value, against training's
  unseen        categories: share of values training never had, against the chance of a new
                value in a training-like batch (Good-Turing: training's singletons / rows)
  invalid       values the schema refuses (not a number, not finite, outside its domain)
The first three are calibrated to the batch size (calibration.py); an invalid value is never
chance, so any is an alarm.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from models import features as F
from monitoring import calibration as C

DECILES = np.linspace(0, 1, 11)[1:-1]
RARE_SHARE = 0.005  # categories below this share of training are pooled into one bin
RARE, UNSEEN = "(rare)", "(unseen)"


@dataclass(frozen=True)
class Settings:
    """From the one config (monitoring/settings.py, monitor_*)."""

    false_alarm_rate: float = 0.05  # per batch, over all checks (Bonferroni)
    min_distance: float = 0.02  # Jensen-Shannon floor
    min_share_change: float = 0.03  # floor for missing/unseen shares


@dataclass(frozen=True)
class Check:
    feature: str
    check: str  # distribution | missing | unseen | invalid
    rows: int  # rows the statistic was computed on
    training: str  # what training had, for a person
    served: str  # what the batch had
    result: C.Calibrated

    @property
    def alarm(self) -> bool:
        return self.result.alarm

    def finding(self) -> str:
        r = self.result
        if self.check == "invalid":
            return f"feature '{self.feature}': {self.served}"
        return (f"feature '{self.feature}' {self.check}: {self.served} vs training "
                f"{self.training}; distance {r.distance:.3f} > {r.threshold:.3f} at "
                f"{self.rows} rows (p = {r.p_value:.1g})")


@dataclass
class Parsed:
    """One feature's served or training values, sorted into what the checks count."""

    values: list  # present, valid values (float for numbers, str for categories)
    missing: int
    invalid: Counter  # reason -> count
    examples: list[str]  # a few invalid values, quoted


def domains(schema) -> dict[str, tuple[float, float]]:
    """Feature -> (min, max) the schema allows (missing bounds are infinite)."""
    out = {}
    for feature in schema.feature:
        domain = feature.int_domain if feature.HasField("int_domain") else \
            feature.float_domain if feature.HasField("float_domain") else None
        if domain is not None:
            out[feature.name] = (domain.min if domain.HasField("min") else -math.inf,
                                 domain.max if domain.HasField("max") else math.inf)
    return out


def parse(feature: F.Feature, texts: list[str], bounds=(-math.inf, math.inf)) -> Parsed:
    parsed = Parsed([], 0, Counter(), [])

    def refuse(reason: str, text: str) -> None:
        parsed.invalid[reason] += 1
        if len(parsed.examples) < 3:
            parsed.examples.append(repr(text))

    for text in texts:
        if text == "":
            parsed.missing += 1
            continue
        if feature.dtype == "string":
            parsed.values.append(text)
            continue
        try:
            number = float(text)
        except ValueError:
            refuse("not a number", text)
            continue
        if not math.isfinite(number):
            refuse("not finite", text)
        elif feature.dtype == "int" and not number.is_integer():
            refuse("not an integer", text)
        elif not bounds[0] <= number <= bounds[1]:
            refuse(f"outside [{bounds[0]:g}, {bounds[1]:g}]", text)
        elif feature.categorical:
            parsed.values.append(str(int(number)))
        else:  # as the model reads it: float32, so "41.9" and the example's 41.9000015 agree
            parsed.values.append(float(np.float32(number)))
    return parsed


class FeatureBaseline:
    """Training's bins and counts for one feature."""

    def __init__(self, feature: F.Feature, training: Parsed):
        self.feature = feature
        self.rows = len(training.values) + training.missing
        self.missing = training.missing
        if feature.categorical:
            counts = Counter(training.values)
            present = max(sum(counts.values()), 1)
            self.categories = sorted(v for v, c in counts.items() if c / present >= RARE_SHARE)
            self.index = {v: i for i, v in enumerate(self.categories)}
            self.seen = set(counts)
            self.singletons = sum(1 for c in counts.values() if c == 1)
        else:
            values = np.asarray(training.values, dtype=float)
            self.edges = np.unique(np.quantile(values, DECILES)) if len(values) else np.array([])
        self.counts, _ = self.bin(training.values)

    def bin(self, values: list) -> tuple[np.ndarray, int]:
        """Counts over the training bins, and how many values training never had."""
        if not self.feature.categorical:
            codes = np.searchsorted(self.edges, np.asarray(values, dtype=float), side="right")
            return np.bincount(codes, minlength=len(self.edges) + 1), 0
        counts = np.zeros(len(self.categories) + 1, dtype=np.int64)  # last: rare
        unseen = 0
        for value in values:
            if value in self.index:
                counts[self.index[value]] += 1
            elif value in self.seen:
                counts[-1] += 1
            else:
                unseen += 1
        return counts, unseen

    def describe(self, counts: np.ndarray) -> str:
        """The bin holding the most values, with its share: a person's anchor."""
        total = max(int(counts.sum()), 1)
        top = int(np.argmax(counts))
        if self.feature.categorical:
            name = (self.categories + [RARE])[top]
        else:
            edges = [-math.inf, *self.edges, math.inf]
            name = f"[{edges[top]:g}, {edges[top + 1]:g})"
        return f"{name} {counts[top] / total:.0%}"


class Baseline:
    """What the model's training rows look like, per feature, on their own bins."""

    def __init__(self, rows: list[dict[str, str]], schema=None):
        if not rows:
            raise ValueError("no training rows to compare with")
        self.domains = domains(schema) if schema is not None else {}
        self.rows = len(rows)
        self.features = {
            f.name: FeatureBaseline(f, parse(f, [r.get(f.name, "") for r in rows],
                                             self.domains.get(f.name, (-math.inf, math.inf))))
            for f in F.SERVING_FEATURES}

    def check(self, rows: list[dict[str, str]], settings: Settings = Settings(),
              other_checks: int = 0) -> list[Check]:
        """Every check of every feature on a served batch, alarms calibrated together (with
        `other_checks` more sharing the batch's false-alarm rate)."""
        pending = []  # (feature, check, train counts, served counts, statistic, floor, texts)
        invalid = []
        for name, base in self.features.items():
            f = base.feature
            served = parse(f, [r.get(name, "") for r in rows],
                           self.domains.get(name, (-math.inf, math.inf)))
            n = len(rows)
            counts, unseen = base.bin(served.values)
            if counts.sum():
                pending.append((base, "distribution", base.counts, counts, C.jensen_shannon,
                                settings.min_distance,
                                base.describe(base.counts), base.describe(counts)))
            pending.append((base, "missing", [base.missing, base.rows - base.missing],
                            [served.missing, n - served.missing], C.share_change,
                            settings.min_share_change, f"{base.missing / base.rows:.1%}",
                            f"{served.missing / n:.1%} absent"))
            if f.categorical:
                present = base.rows - base.missing
                chance = base.singletons + 1  # Good-Turing, +1: a new value is never impossible
                pending.append((base, "unseen", [chance, max(present - chance, 1)],
                                [unseen, len(served.values) - unseen], C.share_rise,
                                settings.min_share_change, f"~{chance / max(present, 1):.2%}",
                                f"{unseen} of {len(served.values)} values never in training"))
            bad = sum(served.invalid.values())
            if bad:
                reasons = ", ".join(f"{c} {r}" for r, c in served.invalid.most_common())
                said = f"{bad} of {n} values refused by the schema ({reasons}), " \
                    f"e.g. {', '.join(served.examples)}"
                invalid.append(Check(name, "invalid", n, "none", said,
                                     C.Calibrated(float(bad), 0.0, 0.0, True)))
        alpha = settings.false_alarm_rate / max(len(pending) + other_checks, 1)
        out = []
        for base, check, train, served_counts, statistic, floor, training, served_text in pending:
            result = C.calibrate(np.asarray(train), np.asarray(served_counts), statistic,
                                 alpha=alpha, floor=floor,
                                 seed=C.seed_for(base.feature.name, check,
                                                 int(np.sum(served_counts))))
            out.append(Check(base.feature.name, check, int(np.sum(served_counts)), training,
                             served_text, result))
        return invalid + out

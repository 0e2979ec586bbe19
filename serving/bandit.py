"""Choosing between model versions from outcomes: a Thompson-sampling bandit on late labels.

Every keyed request (the client's X-Request-Id) that the bandit routes is written to a
ledger beside models.config: key, version, probability. When its label arrives (the
server's `:feedback` endpoint or `python -m serving.rollout feedback FILE`), the version
that answered earns a reward in [0, 1], by default the probability it gave to what really
happened (`likelihood`; `accuracy` and `brier` are the other settings). Each version keeps a
Beta(1 + rewards, 1 + labels - rewards) posterior of its mean reward: Beta-Bernoulli
Thompson sampling with fractional updates, which holds for any reward bounded in [0, 1]
(Agrawal & Goyal, 2012). Traffic follows each version's probability of being the best
(what per-request Thompson sampling does on average), never below a floor until the
bandit is decided, so a version that starts unlucky still gets labels.

A request id is answered once: the ledger binds it to the version that answered, and a
second request with an id already in the ledger is refused (409), so nobody can re-send
another client's id until the version they prefer answers and then earn that version the
client's label. A label is applied once per id.

State (`bandit.json`), ledger (`bandit_requests.jsonl`) and labels that matched no request
(`bandit_unmatched.jsonl`, kept to be fed again) live in the rollout's config dir, with the
labels each credential sent in the last minute (`labels_sent.json`, so one cap holds across
the server, the router and the command line); every change happens under a file lock and
the state is written atomically, so the server and the command line can both feed labels,
and a restart loses nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import math
import random
import re
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from serving.model_config import STATE_FILE as ROLLOUT_FILE
from serving.model_config import RolloutError, _atomic_write, load_state

STATE_FILE = "bandit.json"
LEDGER_FILE = "bandit_requests.jsonl"
UNMATCHED_FILE = "bandit_unmatched.jsonl"
HELD_FILE = "bandit_held.jsonl"  # labels that came while serving was paused
LOCK_FILE = ".bandit.lock"
QUOTA_FILE = "labels_sent.json"  # per credential: (time, labels) over the last minute
MAX_REQUEST_ID = 128
REQUEST_ID = re.compile(rf"^[\x21-\x7e]{{1,{MAX_REQUEST_ID}}}$")  # printable ASCII, no spaces
REWARDS = {
    "likelihood": lambda p, y: p if y else 1.0 - p,
    "accuracy": lambda p, y: float((p >= 0.5) == bool(y)),
    "brier": lambda p, y: 1.0 - (p - y) ** 2,
}
DRAWS = 20_000  # posterior draws behind each probability of being best


@dataclasses.dataclass
class Arm:
    version: int
    requests: int = 0  # rows routed to it by the bandit
    labels: int = 0  # of those, rows whose label came back
    reward: float = 0.0  # sum of their rewards

    @property
    def mean(self) -> float | None:
        return self.reward / self.labels if self.labels else None

    def posterior(self) -> tuple[float, float]:
        return 1.0 + self.reward, 1.0 + self.labels - self.reward


@dataclasses.dataclass
class Bandit:
    arms: list[Arm]
    reward: str = "likelihood"
    floor: float = 0.05  # minimum traffic share of every arm until decided
    threshold: float = 0.95  # probability of being best that `promote` needs
    min_labels: int = 100  # labels every arm needs before `promote`
    started: float = dataclasses.field(default_factory=time.time)
    weights: dict[int, float] = dataclasses.field(default_factory=dict)  # traffic shares
    p_best: dict[int, float] = dataclasses.field(default_factory=dict)
    duplicates: int = 0  # labels for keys already labelled (ignored)
    history: list[dict] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise RolloutError(f"--reward must be one of {sorted(REWARDS)}, got {self.reward!r}")
        if len({a.version for a in self.arms}) < 2:
            raise RolloutError("a bandit needs at least two different versions")
        if not 0.0 <= self.floor * len(self.arms) < 1.0:
            raise RolloutError(f"--floor {self.floor} for {len(self.arms)} versions leaves no "
                               "traffic to learn with: keep floor x versions below 1")
        if not 0.5 < self.threshold < 1.0:
            raise RolloutError(f"--threshold must be in (0.5, 1), got {self.threshold}")
        if not self.weights:
            self.update_weights()

    def arm(self, version: int) -> Arm:
        return next(a for a in self.arms if a.version == version)

    def update_weights(self, seed: int = 0) -> None:
        """P(best) by posterior draws; shares = floor + the rest in proportion to P(best)."""
        rng = np.random.default_rng(seed)
        draws = np.stack([rng.beta(*a.posterior(), size=DRAWS) for a in self.arms])
        wins = np.bincount(draws.argmax(axis=0), minlength=len(self.arms)) / DRAWS
        self.p_best = {a.version: float(w) for a, w in zip(self.arms, wins, strict=True)}
        spare = 1.0 - self.floor * len(self.arms)
        self.weights = {a.version: self.floor + spare * float(w)
                        for a, w in zip(self.arms, wins, strict=True)}

    def leader(self) -> Arm:
        return max(self.arms, key=lambda a: self.p_best.get(a.version, 0.0))

    def decision(self) -> tuple[int | None, str]:
        """(winner, why) when `promote` may act, else (None, what is still missing)."""
        short = [a for a in self.arms if a.labels < self.min_labels]
        if short:
            return None, ", ".join(f"version {a.version} has {a.labels} of {self.min_labels} "
                                   "labels" for a in short)
        best = self.leader()
        chance = self.p_best[best.version]
        if chance < self.threshold:
            return None, (f"version {best.version} leads with P(best) {chance:.3f}, below the "
                          f"threshold {self.threshold}")
        return best.version, f"version {best.version} is best with P(best) {chance:.3f}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["weights"] = {str(k): v for k, v in self.weights.items()}
        data["p_best"] = {str(k): v for k, v in self.p_best.items()}
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Bandit:
        data = json.loads(text)
        data["arms"] = [Arm(**a) for a in data["arms"]]
        data["weights"] = {int(k): v for k, v in data.get("weights", {}).items()}
        data["p_best"] = {int(k): v for k, v in data.get("p_best", {}).items()}
        return cls(**data)


@dataclasses.dataclass
class FeedbackResult:
    accepted: int = 0
    unknown: list[str] = dataclasses.field(default_factory=list)  # kept in the unmatched file
    duplicates: int = 0
    held: int = 0  # serving is paused: kept, applied at resume
    contaminated: int = 0  # the request was served inside a contamination mark: not learned

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "unknown_keys": self.unknown[:100],
                "unknown": len(self.unknown), "duplicates": self.duplicates,
                "held": self.held, "contaminated": self.contaminated}


class BanditStore:
    """The bandit's files in one config dir, changed only under the lock."""

    def __init__(self, config_dir: str | Path):
        self.dir = Path(config_dir)
        self._index: dict[str, dict] = {}  # the ledger as read so far (see _ledger)
        self._read_to: tuple[int, int] = (-1, 0)  # (inode, offset) of the ledger read so far

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> Bandit | None:
        path = self.dir / STATE_FILE
        return Bandit.from_json(path.read_text()) if path.is_file() else None

    def save(self, bandit: Bandit) -> None:
        _atomic_write(self.dir / STATE_FILE, bandit.to_json())

    def start(self, bandit: Bandit) -> Bandit:
        with self.locked():
            for name in (STATE_FILE, LEDGER_FILE):  # a new bandit starts from nothing
                (self.dir / name).unlink(missing_ok=True)
            bandit.history.append({"time": time.time(), "action": "start", "versions":
                                   [a.version for a in bandit.arms]})
            self.save(bandit)
        return bandit

    def end(self, action: str) -> Bandit | None:
        """Archives the state (bandit-<time>.json) and stops routing by it."""
        with self.locked():
            bandit = self.load()
            if bandit is None:
                return None
            bandit.history.append({"time": time.time(), "action": action})
            _atomic_write(self.dir / f"bandit-{int(time.time())}.json", bandit.to_json())
            (self.dir / STATE_FILE).unlink()
            return bandit

    def routed(self, version: int, keys_and_probabilities: list[tuple[str, float]],
               rows: int, features: list[dict] | None = None) -> list[str]:
        """Records `rows` routed to `version`, and the keyed ones in the ledger (with each
        row's raw values, which a contamination mark's filter is checked against); returns
        the keys already in the ledger instead (recording nothing): each id is answered
        once."""
        with self.locked():
            bandit = self.load()
            if bandit is None or version not in {a.version for a in bandit.arms}:
                return []
            if keys_and_probabilities:
                ledger = self._ledger()
                taken = [k for k, _ in keys_and_probabilities if k in ledger]
                if taken:
                    return taken
            bandit.arm(version).requests += rows
            if keys_and_probabilities:
                with open(self.dir / LEDGER_FILE, "a", encoding="utf-8") as f:
                    now = time.time()
                    rows_of = features if features and len(features) == len(
                        keys_and_probabilities) else [None] * len(keys_and_probabilities)
                    f.writelines(json.dumps({"key": k, "version": version, "p": p,
                                             "time": now,
                                             **({"features": r} if r is not None else {})},
                                            default=str) + "\n"
                                 for (k, p), r in zip(keys_and_probabilities, rows_of,
                                                      strict=True))
            self.save(bandit)
        return []

    def _ledger(self) -> dict[str, dict]:
        """The ledger by key (under the lock). Read incrementally: the file only grows while
        a bandit runs, so each call reads just what was appended since the last one."""
        path = self.dir / LEDGER_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._index, self._read_to = {}, (-1, 0)
            return self._index
        inode, offset = self._read_to
        if stat.st_ino != inode or stat.st_size < offset:  # a new bandit's ledger
            self._index, offset = {}, 0
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line still being written: read it next time
                offset += len(line)
                record = json.loads(line)
                if "label" in record:  # a label already applied
                    if record["key"] in self._index:
                        self._index[record["key"]]["labelled"] = True
                else:
                    self._index[record["key"]] = record
        self._read_to = (stat.st_ino, offset)
        return self._index

    def take_quota(self, name: str, count: int, limit: int,
                   now: float | None = None) -> int | None:
        """Counts `count` labels against `name`'s `limit` a minute, for every process that
        shares this config dir: None when taken, else the labels already sent this minute
        (and nothing is counted)."""
        now = time.time() if now is None else now
        with self.locked():
            path = self.dir / QUOTA_FILE
            try:
                sent = json.loads(path.read_text()) if path.is_file() else {}
            except ValueError:
                sent = {}
            recent = {k: [e for e in v if e[0] > now - 60] for k, v in sent.items()}
            mine = recent.setdefault(name, [])
            used = sum(n for _, n in mine)
            if used + count > limit:
                return used
            mine.append([now, count])
            _atomic_write(path, json.dumps({k: v for k, v in recent.items() if v}))
        return None

    def feedback(self, labels: list[tuple[str, int]], paused: bool = False,
                 marks: Collection = ()) -> tuple[FeedbackResult, Bandit]:
        """Applies (key, label) pairs: all of them or, on a bad one, none (checked first).
        While serving is `paused` the labels are held (applied by `release_held`); a label
        of a request served inside one of `marks` (control/marks.py, time only) is not
        learned from."""
        with self.locked():
            bandit = self.load()
            if bandit is None:
                raise RolloutError("no bandit is running: start one with "
                                   "`python -m serving.rollout bandit --versions A B`")
            result = FeedbackResult()
            # The rollout file is the truth: a server's view of the pause may be a poll old,
            # and a label held after `resume` took the held ones would wait for the next.
            if (self.dir / ROLLOUT_FILE).is_file():
                paused = bool(load_state(self.dir).pause)
            if paused:
                with open(self.dir / HELD_FILE, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps({"time": time.time(), "key": k, "label": y}) + "\n"
                                 for k, y in labels)
                result.held = len(labels)
                return result, bandit
            ledger = self._ledger()
            applied, unmatched = [], []
            for key, label in labels:
                record = ledger.get(key)
                if record is None:
                    result.unknown.append(key)
                    unmatched.append({"time": time.time(), "key": key, "label": label})
                elif record.get("labelled"):
                    result.duplicates += 1
                elif _contaminated(record, marks):
                    record["labelled"] = True
                    applied.append({"key": key, "label": label, "contaminated": True})
                    result.contaminated += 1
                else:
                    record["labelled"] = True
                    arm = bandit.arm(record["version"])
                    arm.labels += 1
                    arm.reward += REWARDS[bandit.reward](float(record["p"]), label)
                    applied.append({"key": key, "label": label})
                    result.accepted += 1
            bandit.duplicates += result.duplicates
            if applied:
                with open(self.dir / LEDGER_FILE, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(r) + "\n" for r in applied)
            if unmatched:
                with open(self.dir / UNMATCHED_FILE, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(r) + "\n" for r in unmatched)
            bandit.update_weights(seed=sum(a.labels for a in bandit.arms))
            self.save(bandit)
        return result, bandit

    def release_held(self, marks: Collection = ()) -> FeedbackResult:
        """At resume: the labels held while paused, applied now. Taken under the lock (the
        server appends under it until its next poll), and kept, renamed, beside the rest."""
        with self.locked():
            path = self.dir / HELD_FILE
            if not path.is_file():
                return FeedbackResult()
            held = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            archive = self.dir / f"bandit_held-{stamp}.jsonl"
            n = 1
            while archive.exists():  # two resumes in one second keep both archives
                archive = self.dir / f"bandit_held-{stamp}-{n}.jsonl"
                n += 1
            path.rename(archive)
        if not held or self.load() is None:
            return FeedbackResult()
        result, _ = self.feedback([(r["key"], int(r["label"])) for r in held], marks=marks)
        return result


def _contaminated(record: dict, marks: Collection) -> bool:
    """Whether a ledger record's request was served inside a mark: its time within the
    stretch and, for a mark with a `where` filter, its raw values matching every one (a
    request whose values were not recorded is taken as matching: a mark means "learn
    nothing from this", and nothing says it is outside)."""
    from control.marks import _text

    served = record.get("time")
    if served is None:
        return False
    for mark in marks:
        if not mark.start <= served < mark.end:
            continue
        values = record.get("features")
        if not mark.where or values is None or all(
                _text(values.get(k)) == v for k, v in mark.where.items()):
            return True
    return False


def parse_label(value: Any, where: str) -> int:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return 1
    if text in ("0", "0.0", "false", "no"):
        return 0
    raise RolloutError(f"{where}: label {value!r} is not 0/1 or true/false")


def labels_from_json(body: Any) -> list[tuple[str, int]]:
    """`{"labels": [{"key": "...", "label": 1}, ...]}`, checked whole before anything counts."""
    rows = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not rows:
        raise RolloutError('feedback must be {"labels": [{"key": "...", "label": 0 or 1}, ...]}')
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("key") or "label" not in row:
            raise RolloutError(f"labels[{i}]: needs a non-empty 'key' and a 'label'")
        out.append((str(row["key"]), parse_label(row["label"], f"labels[{i}]")))
    return out


def labels_from_file(path: Path, key: str = "key", label: str = "label") -> list[tuple[str, int]]:
    """A CSV with `key` and `label` columns (a header row), or JSONL of {key, label}."""
    if not path.is_file():
        raise RolloutError(f"no labels file at {path}")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RolloutError(f"{path}:{n}: not JSON ({e})") from None
        return labels_from_json({"labels": rows})
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (key, label) if c not in (reader.fieldnames or [])]
        if missing:
            raise RolloutError(f"{path}: no column(s) {missing}; it has {reader.fieldnames}")
        return [(row[key], parse_label(row[label], f"{path}:{n}"))
                for n, row in enumerate(reader, 2) if row[key]]


def describe(bandit: Bandit) -> list[str]:
    lines = [f"  bandit ({bandit.reward} reward, floor {bandit.floor:.0%}, promote at P(best) "
             f">= {bandit.threshold} with >= {bandit.min_labels} labels each):"]
    for arm in bandit.arms:
        mean = f"{arm.mean:.4f}" if arm.mean is not None else "  -   "
        lines.append(f"    version {arm.version:<12} requests {arm.requests:>7}  labels "
                     f"{arm.labels:>6}  reward {mean}  P(best) "
                     f"{bandit.p_best.get(arm.version, 0):.3f}  traffic "
                     f"{bandit.weights.get(arm.version, 0):.1%}")
    lines.append(f"    {bandit.decision()[1]}")
    return lines


def pick_version(labels: dict[str, int], canary_fraction: float, weights: dict[int, float],
                 available: Collection[int], rng: random.Random) -> tuple[int, str]:
    """(version, route) for an unversioned request, as TF Serving would need a router to do:
    the bandit's weights, else the canary's fraction, else stable, else the newest."""
    if weights:
        chosen = choose(weights, available, rng.random())
        if chosen is not None:
            return chosen, "bandit"
    if "canary" in labels and rng.random() < canary_fraction:
        return labels["canary"], "canary"
    if "stable" in labels:
        return labels["stable"], "stable"
    return max(available), "latest"


def check_request_id(request_id: str) -> None:
    """An X-Request-Id the ledger can key on: printable ASCII without spaces, 128 at most."""
    if request_id and not REQUEST_ID.match(request_id):
        raise RolloutError(f"X-Request-Id must be 1 to {MAX_REQUEST_ID} printable ASCII "
                           "characters without spaces (a UUID, say)")


def already_answered(keys: list[str]) -> str:
    """The 409's message for request ids the ledger already holds."""
    shown = ", ".join(repr(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
    return (f"request id {shown} was already answered: each X-Request-Id is answered once, "
            "so its label credits the version that answered it. Send a new, unguessable id "
            "(a UUID) with each request")


def keyed_probabilities(response: dict, request_id: str) -> list[tuple[str, float]]:
    """(key, probability) per row of a keyed :predict response, keyed as the request log
    keys them (`ID`, or `ID/0`, `ID/1`, ... in a batch)."""
    if not request_id:
        return []
    rows = response.get("predictions", response.get("outputs"))
    if isinstance(rows, dict):
        rows = rows.get("probabilities", [])
    values = [r.get("probabilities") if isinstance(r, dict) else r for r in rows or []]
    values = [v[0] if isinstance(v, list) else v for v in values]
    if len(values) == 1:
        return [(request_id, float(values[0]))]
    return [(f"{request_id}/{i}", float(v)) for i, v in enumerate(values)]


def reply(result: FeedbackResult, state: Bandit) -> dict[str, Any]:
    """The `:feedback` endpoint's answer: what was applied, each arm's figures."""
    return {**result.as_dict(), "arms": [
        {"version": a.version, "requests": a.requests, "labels": a.labels, "reward": a.mean,
         "p_best": state.p_best.get(a.version), "traffic": state.weights.get(a.version)}
        for a in state.arms]}


def choose(weights: dict[int, float], available: Iterable[int], u: float) -> int | None:
    """The version a uniform draw `u` picks among the loaded ones, by weight."""
    live = [(v, w) for v, w in sorted(weights.items()) if v in set(available) and w > 0]
    total = sum(w for _, w in live)
    if not live or not math.isfinite(total) or total <= 0:
        return None
    edge = 0.0
    for version, weight in live:
        edge += weight / total
        if u < edge:
            return version
    return live[-1][0]


def percentages(weights: dict[int, float]) -> dict[int, int]:
    """Whole percentages summing to 100 (a Vertex endpoint's traffic split), by largest
    remainder; a version with any weight keeps at least 1%, so the floor survives rounding."""
    total = sum(weights.values())
    if not weights or total <= 0:
        raise RolloutError("no traffic weights to turn into percentages")
    exact = {v: 100 * w / total for v, w in weights.items()}
    shares = {v: max(int(x), 1 if x > 0 else 0) for v, x in exact.items()}
    by_remainder = sorted(exact, key=lambda v: exact[v] - int(exact[v]), reverse=True)
    while sum(shares.values()) < 100:
        for v in by_remainder:
            if sum(shares.values()) == 100:
                break
            shares[v] += 1
    while sum(shares.values()) > 100:  # the 1% minimums pushed it over: take from the largest
        shares[max(shares, key=shares.get)] -= 1
    return shares

"""Canary, promote and rollback: one command each, every change written to models.config.

  python -m serving.rollout status
  python -m serving.rollout stable [VERSION]          serve VERSION (default newest) as stable
  python -m serving.rollout canary [VERSION] --fraction 0.1
  python -m serving.rollout promote                    the canary becomes stable
  python -m serving.rollout rollback                   stable goes back to the previous stable
  python -m serving.rollout bandit --versions 3 4      route by outcomes (serving/bandit.py)
  python -m serving.rollout feedback labels.csv        late labels (key,label) for the bandit
  python -m serving.rollout promote                    ...the bandit's winner becomes stable
  python -m serving.rollout vertex-split --endpoint E --arm 3=ID --arm 4=ID
                                                       the bandit's weights as E's traffic split
  python -m serving.rollout pause --fallback previous --reason "flooded warehouse"
                                                       stop the model (or: constant --constant P,
                                                       or refuse); every path answers so
  python -m serving.rollout resume --reason "stock counts fixed"

Every version under the serving directory was pushed by the Pusher, which pushes only
models the Evaluator blessed (and, with safe_to_serve on, that passed the serving check);
`rollback` returns to the version that was stable before the current one, or to the newest
pushed version older than it. TF Serving polls the written models.config
(`--model_config_file_poll_wait_seconds`); the local server and the router poll it too. Every
change is a record of the audit log (control/records.py), with who made it (`--by`, else
TAXI_OPERATOR, else the login) and why (`--reason`); `status` shows the newest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from control import marks, records
from serving import bandit as B
from serving import model_config, versions, vertex_split
from serving import pause as pause_mod
from serving.model_config import Rollout, RolloutError


class Rollouts:
    """The rollout state of one model: read, change, write models.config."""

    def __init__(self, model_name: str, base_path: str | Path, config_dir: str | Path,
                 config_base_path: str | None = None, control_dir: str | None = None,
                 who: str | None = None, reason: str = ""):
        self.model_name = model_name
        self.control_dir = control_dir  # the audit log; None: not recorded (tests, tools)
        self.who, self.reason = records.operator(who), reason
        self.base_path = str(base_path)
        self.config_dir = Path(config_dir)
        # Where TF Serving sees the versions, if not here (/models/NAME in its container).
        self.config_base_path = config_base_path or self.base_path
        self.bandits = B.BanditStore(self.config_dir)

    def state(self) -> Rollout:
        return model_config.load_state(self.config_dir)

    def _pushed(self) -> list[int]:
        pushed = versions.pushed_versions(self.base_path)
        if not pushed:
            raise RolloutError(f"no pushed versions under {self.base_path}; run the pipeline "
                               "until the Pusher pushes a blessed model")
        return pushed

    def _version(self, version: int | None) -> int:
        pushed = self._pushed()
        if version is None:
            return pushed[-1]
        if version not in pushed:
            raise RolloutError(f"version {version} is not under {self.base_path}; "
                               f"pushed versions: {pushed}")
        return version

    def _save(self, rollout: Rollout, action: str, **extra) -> Rollout:
        rollout.history.append({"time": time.time(), "action": action, "stable": rollout.stable,
                                "canary": rollout.canary, "fraction": rollout.canary_fraction,
                                "who": self.who, **extra})
        model_config.write(self.config_dir, self.model_name, self.config_base_path, rollout)
        if self.control_dir:
            records.append(self.control_dir, action.split()[0].rstrip(":"), self.reason, self.who,
                           model=self.model_name, change=action)
        return rollout

    def pause(self, fallback: str, version: int | None = None,
              constant: float | None = None) -> Rollout:
        """Every serving path answers with the fallback from its next poll on."""
        rollout = self.state()
        if rollout.pause:
            raise RolloutError(f"serving is already paused ({rollout.pause['reason']}): "
                               "`resume` first, then pause again to change the fallback")
        pushed = versions.pushed_versions(self.base_path)
        serving = rollout.stable if rollout.stable is not None else (pushed[-1] if pushed
                                                                     else None)
        try:
            paused = pause_mod.make(self.reason, fallback, self.who, pushed, serving, version,
                                    constant)
        except pause_mod.PauseError as e:
            raise RolloutError(str(e)) from None
        rollout.pause = paused.to_dict()
        what = f"version {paused.version}" if fallback == "previous" else \
            f"{paused.constant:g}" if fallback == "constant" else "503"
        return self._save(rollout, f"pause: {fallback} ({what}) answers")

    def resume(self, marks: tuple = ()) -> tuple[Rollout, B.FeedbackResult]:
        """The model answers again; labels held during the pause are applied."""
        rollout = self.state()
        if not rollout.pause:
            raise RolloutError("serving is not paused")
        since = rollout.pause["since"]
        rollout.pause = {}
        saved = self._save(rollout, f"resume after {(time.time() - since) / 60:.0f} min paused")
        return saved, self.bandits.release_held(marks)

    def set_stable(self, version: int | None = None) -> Rollout:
        rollout = self.state()
        chosen = self._version(version)
        rollout.stable = chosen
        if rollout.canary == chosen:
            rollout.canary, rollout.canary_fraction = None, 0.0
        return self._save(rollout, f"stable {chosen}")

    def canary(self, version: int | None, fraction: float) -> Rollout:
        if not 0.0 < fraction <= 1.0:
            raise RolloutError(f"--fraction must be in (0, 1], got {fraction}")
        rollout = self.state()
        if rollout.stable is None:
            raise RolloutError("no stable version yet: run `stable` first, so the canary has "
                               "something to be compared with and to fall back to")
        chosen = self._version(version)
        if chosen == rollout.stable:
            raise RolloutError(f"version {chosen} is already stable; push a new version first")
        rollout.canary, rollout.canary_fraction = chosen, fraction
        return self._save(rollout, f"canary {chosen} at {fraction:.0%}")

    def start_bandit(self, versions: list[int] | None, newest: int | None,
                     **settings) -> Rollout:
        """Unversioned traffic routed among `versions` (or the newest N pushed) by outcomes."""
        pushed = self._pushed()
        chosen = [self._version(v) for v in versions] if versions else pushed[-(newest or 2):]
        if len(set(chosen)) < 2:
            raise RolloutError(f"a bandit needs two or more pushed versions; pushed: {pushed}")
        from models import problem as P

        for version in chosen:  # rewards are probabilities of 0/1 outcomes
            try:
                P.binary_only("the outcome bandit", P.from_model(
                    str(Path(self.base_path) / str(version))) or P.current())
            except P.ProblemError as e:
                raise RolloutError(str(e)) from None
        state = B.Bandit([B.Arm(v) for v in sorted(set(chosen))], **settings)
        rollout = self.state()
        rollout.bandit = [a.version for a in state.arms]
        if rollout.stable is None:  # what serves if the bandit's versions cannot load
            rollout.stable = rollout.bandit[0]
        rollout.canary, rollout.canary_fraction = None, 0.0
        self.bandits.start(state)
        return self._save(rollout, f"bandit over {rollout.bandit}")

    def feedback(self, labels: list[tuple[str, int]]) -> B.FeedbackResult:
        """Labels from a file, by the path `:feedback` takes: held while paused, not learned
        inside a contamination mark, recorded in the audit log under who ran it (access to
        the rollout's folder is the credential)."""
        from control import marks

        active = tuple(marks.active(self.control_dir)) if self.control_dir else ()
        result, _ = self.bandits.feedback(labels, paused=bool(self.state().pause),
                                          marks=active)
        if self.control_dir:
            records.append(self.control_dir, "feedback", self.reason, self.who,
                           labels=len(labels), accepted=result.accepted, held=result.held,
                           via="serving.rollout feedback")
        return result

    def _end_bandit(self, rollout: Rollout, winner: int | None, action: str) -> Rollout:
        self.bandits.end(action)
        if winner is not None:
            rollout.stable = winner
        rollout.bandit = []
        return self._save(rollout, action)

    def promote(self) -> Rollout:
        rollout = self.state()
        running = self.bandits.load() if rollout.bandit else None
        if running is not None:
            winner, why = running.decision()
            if winner is None:
                raise RolloutError(f"the bandit has not decided: {why}; feed more labels "
                                   "(`feedback`) or end it with `rollback`")
            return self._end_bandit(rollout, winner, f"promote {winner} ({why})")
        if rollout.canary is None:
            raise RolloutError("no canary to promote; start one with `canary`")
        rollout.stable, rollout.canary, rollout.canary_fraction = rollout.canary, None, 0.0
        return self._save(rollout, f"promote {rollout.stable}")

    def rollback(self) -> Rollout:
        """Stable back to the previous stable version (or the newest older pushed one);
        any canary is dropped."""
        rollout = self.state()
        if rollout.bandit:  # the experiment is what is rolled back: stable serves it all
            return self._end_bandit(rollout, None, f"bandit over {rollout.bandit} ended, "
                                                   f"stable {rollout.stable} serves all traffic")
        if rollout.stable is None:
            raise RolloutError("nothing to roll back: no stable version is set")
        pushed = self._pushed()
        bad = {h["rolled_back"] for h in rollout.history if "rolled_back" in h} | {rollout.stable}
        previous = [h["stable"] for h in rollout.history
                    if h.get("stable") is not None and h["stable"] not in bad
                    and h["stable"] in pushed]
        older = [v for v in pushed if v < rollout.stable and v not in bad]
        target = previous[-1] if previous else (older[-1] if older else None)
        if target is None:
            raise RolloutError(f"no version to roll back to: {rollout.stable} is the oldest "
                               f"pushed version {pushed}")
        current = rollout.stable
        rollout.stable, rollout.canary, rollout.canary_fraction = target, None, 0.0
        return self._save(rollout, f"rollback {current} -> {target}", rolled_back=current)

    def describe(self) -> str:
        rollout = self.state()
        pushed = versions.pushed_versions(self.base_path)
        lines = [f"model {self.model_name}: base path {self.base_path}",
                 f"  pushed versions: {pushed or 'none'}",
                 f"  stable: {rollout.stable if rollout.stable is not None else '-'}",
                 f"  canary: {rollout.canary if rollout.canary is not None else '-'}"
                 + (f" ({rollout.canary_fraction:.0%} of traffic)" if rollout.canary else ""),
                 f"  models.config: {self.config_dir / model_config.CONFIG_FILE}"]
        running = self.bandits.load() if rollout.bandit else None
        if running is not None:
            lines += B.describe(running)
        paused = pause_mod.from_dict(rollout.pause)
        if paused:
            since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(paused.since))
            lines.insert(1, f"  PAUSED since {since} by {paused.who}: {paused.reason}; "
                            f"answering: {paused.route()}")
        log = records.read(self.control_dir) if self.control_dir else []
        if log:
            lines.append(f"  audit log ({self.control_dir}), newest last:")
            lines += [f"    {r.line()}" for r in log[-8:]]
        else:
            for entry in rollout.history[-5:]:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
                lines.append(f"  {when}  {entry['action']}")
        return "\n".join(lines)


def _pause(rollouts: Rollouts, args: argparse.Namespace) -> None:
    """Validate and record the pause first, then move the endpoint's traffic: a refused pause
    changes nothing, and a move that fails leaves no pause recorded for traffic that did not
    move."""
    if args.vertex_endpoint and (args.fallback != "previous" or not args.deployed_id):
        raise RolloutError("a Vertex endpoint answers only with a deployed model: pause it with "
                           "--fallback previous --deployed-id ID (the previous model's id)")
    rollout = rollouts.pause(args.fallback, args.version, args.constant)
    if not args.vertex_endpoint:
        return
    try:
        moved = vertex_split.take_all(args.vertex_endpoint, args.deployed_id)
    except Exception:
        rollouts.resume()  # nothing was held yet: the pause is taken back as it was made
        raise
    rollout.pause["vertex"] = {"endpoint": args.vertex_endpoint, "split": moved}
    model_config.write(rollouts.config_dir, rollouts.model_name, rollouts.config_base_path,
                       rollout)
    print(f"{args.vertex_endpoint}: all traffic to {args.deployed_id} (was {moved})")


def _resume(rollouts: Rollouts, args: argparse.Namespace) -> None:
    """Restore the endpoint's split first, then clear the pause: a restore that fails leaves
    the pause, and the split to restore, recorded."""
    vertex = rollouts.state().pause.get("vertex")
    endpoint = args.vertex_endpoint or (vertex or {}).get("endpoint")
    if endpoint and vertex:
        vertex_split.restore(endpoint, vertex["split"])
        print(f"{endpoint}: traffic split restored to {vertex['split']}")
    _, held = rollouts.resume(tuple(marks.active(rollouts.control_dir or "")))
    if held.accepted or held.contaminated:
        print(f"resume: {held.accepted} label(s) held during the pause applied"
              + (f", {held.contaminated} from a contaminated period not learned"
                 if held.contaminated else ""))


def main(argv: list[str] | None = None) -> int:
    from settings.layout import Layout

    defaults = Layout.load()
    parser = argparse.ArgumentParser(prog="python -m serving.rollout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-name", default=defaults.serving_model_name)
    parser.add_argument("--model-base-path", default=defaults.serving_dir,
                        help="the Pusher's versioned directory")
    parser.add_argument("--config-dir", default=defaults.serving_config_dir,
                        help="where models.config and rollout.json live")
    parser.add_argument("--config-base-path", default=None,
                        help="base_path written into models.config, if TF Serving sees the "
                             "versions elsewhere (e.g. /models/NAME in its container, or gs://)")
    parser.add_argument("--control-dir", default=defaults.control_dir,
                        help="the audit log every change is recorded in")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--by", default=None,
                        help="who is acting, for the audit log (default $TAXI_OPERATOR, else "
                             "the login and host)")
    common.add_argument("--reason", default="", help="why, for the audit log (required by "
                                                     "pause and resume)")
    subparsers = parser.add_subparsers(dest="command", required=True)

    class _Commands:  # every command takes --by and --reason
        @staticmethod
        def add_parser(name: str, **kwargs):
            return subparsers.add_parser(name, parents=[common], **kwargs)

    commands = _Commands()
    commands.add_parser("status", help="pushed versions, labels and recent changes")
    stable = commands.add_parser("stable", help="serve a version as stable")
    stable.add_argument("version", type=int, nargs="?", help="default: newest pushed")
    canary = commands.add_parser("canary", help="send a fraction of traffic to a version")
    canary.add_argument("version", type=int, nargs="?", help="default: newest pushed")
    canary.add_argument("--fraction", type=float, default=0.1, help="share of traffic (0, 1]")
    commands.add_parser("promote", help="the canary becomes stable")
    commands.add_parser("rollback", help="stable returns to the previous stable version "
                                         "(during a bandit: ends it, stable serves all)")
    bandit = commands.add_parser("bandit", help="route unversioned traffic among versions by "
                                                "their outcomes (Thompson sampling)")
    arms = bandit.add_mutually_exclusive_group()
    arms.add_argument("--versions", type=int, nargs="+", help="pushed versions to compare")
    arms.add_argument("--newest", type=int, default=None,
                      help="the newest N pushed versions (default 2)")
    bandit.add_argument("--reward", default="likelihood", choices=sorted(B.REWARDS),
                        help="per labelled row: the probability given to the true label "
                             "(likelihood, default), 1 if the 0.5 cut was right (accuracy), "
                             "or 1 - squared error (brier)")
    bandit.add_argument("--floor", type=float, default=0.05,
                        help="minimum share of traffic of every version (default 0.05)")
    bandit.add_argument("--threshold", type=float, default=0.95,
                        help="P(best) the leader needs for `promote` (default 0.95)")
    bandit.add_argument("--min-labels", type=int, default=100,
                        help="labels every version needs for `promote` (default 100)")
    feedback = commands.add_parser("feedback", help="late labels for the bandit: a CSV with "
                                                    "key and label columns, or JSONL")
    feedback.add_argument("file", type=Path)
    feedback.add_argument("--key", default="key", help="key column (default 'key')")
    feedback.add_argument("--label", default="label", help="label column (default 'label')")
    vertex = commands.add_parser(
        "vertex-split", help="apply the bandit's traffic weights to a Vertex AI endpoint's "
                             "traffic split (Vertex routes; the bandit learns)")
    vertex.add_argument("--endpoint", required=True, help="the endpoint's display name")
    vertex.add_argument("--arm", action="append", default=[], metavar="VERSION=DEPLOYED_ID",
                        help="which deployed model serves each bandit version (repeat)")
    vertex.add_argument("--project", help="GCP project (default: gcloud's)")
    vertex.add_argument("--region", default="us-central1")
    vertex.add_argument("--dry-run", action="store_true", help="print the split, change nothing")
    pause = commands.add_parser(
        "pause", help="stop the model: every serving path answers with the fallback until "
                      "`resume` (needs --reason)")
    pause.add_argument("--fallback", choices=pause_mod.FALLBACKS, required=True,
                       help="previous: the version served before; constant: --constant P for "
                            "every row; refuse: 503 with the reason")
    pause.add_argument("--version", type=int, help="previous: this version (default: the "
                                                   "newest pushed one older than the served one)")
    pause.add_argument("--constant", type=float, help="constant: the probability every row "
                                                      "gets, e.g. the training base rate")
    for command in (pause, commands.add_parser(
            "resume", help="the model answers again; labels held while paused are applied")):
        command.add_argument("--vertex-endpoint", help="also on this Vertex endpoint: pause "
                             "moves all its traffic to --deployed-id, resume restores the split")
        command.add_argument("--project", help="GCP project (default: gcloud's)")
        command.add_argument("--region", default="us-central1")
    pause.add_argument("--deployed-id", help="Vertex: the deployed model id that answers "
                                             "while paused (the previous model)")
    args = parser.parse_args(argv)

    rollouts = Rollouts(args.model_name, args.model_base_path, args.config_dir,
                        args.config_base_path, args.control_dir, args.by, args.reason)
    try:
        if getattr(args, "project", None):
            from google.cloud import aiplatform

            aiplatform.init(project=args.project, location=args.region)
        if args.command == "stable":
            rollouts.set_stable(args.version)
        elif args.command == "canary":
            rollouts.canary(args.version, args.fraction)
        elif args.command == "promote":
            rollouts.promote()
        elif args.command == "rollback":
            rollouts.rollback()
        elif args.command == "bandit":
            rollouts.start_bandit(args.versions, args.newest, reward=args.reward,
                                  floor=args.floor, threshold=args.threshold,
                                  min_labels=args.min_labels)
        elif args.command == "feedback":
            result = rollouts.feedback(B.labels_from_file(args.file, args.key, args.label))
            print(f"feedback: {result.accepted} labels applied, {result.held} held while "
                  f"paused, {result.contaminated} inside a contamination mark (not learned), "
                  f"{result.duplicates} already labelled, {len(result.unknown)} for keys the "
                  f"bandit never routed (kept in {args.config_dir}/{B.UNMATCHED_FILE})")
        elif args.command == "pause":
            _pause(rollouts, args)
        elif args.command == "resume":
            _resume(rollouts, args)
        elif args.command == "vertex-split":
            running = rollouts.bandits.load() if rollouts.state().bandit else None
            if running is None:
                raise RolloutError("no bandit is running: start one with `bandit`")
            split = vertex_split.apply(args.endpoint, vertex_split.parse_arms(args.arm),
                                       running.weights, dry_run=args.dry_run)
            print(f"{'would set' if args.dry_run else 'set'} traffic split of {args.endpoint}: "
                  + ", ".join(f"{k}: {v}%" for k, v in split.items()))
    except RolloutError as e:
        print(f"serving.rollout: {e}", file=sys.stderr)
        return 2
    print(rollouts.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())

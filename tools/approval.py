"""Approval before a push (`--require-approval`): see what waits, approve or reject a model by
its fingerprint.

    python -m tools.approval list
    python -m tools.approval approve 3f9a1c2e4b5d6a7f --reason "AUC by quarter checked"
    python -m tools.approval reject 3f9a1c2e4b5d6a7f --reason "worse on 2016-Q4"

The run that blesses a model under --require-approval ends with "waiting for approval",
naming the model and its fingerprint (the sha256 of its graph and variables: what decides
its predictions); an approval applies to that fingerprint only, never to another model. The
next run pushes it (locally the Pusher runs again because the approvals changed; a compiled
Vertex job's Pusher is never cached and reads the approvals when it runs).
"""

from __future__ import annotations

import argparse
import os
import sys

from control import approvals, records


def waiting(metadata_path: str, pipeline_name: str) -> list[dict[str, str]]:
    """Models whose newest push waits for approval, newest first (from local MLMD)."""
    from reporting import runs

    if not os.path.exists(metadata_path):
        return []
    store = runs.connect(metadata_path)
    found, seen = [], set()
    for run in reversed(runs.pipeline_runs(store, pipeline_name)):
        summary = runs.summarize(metadata_path, pipeline_name, run.name)
        fingerprint = summary.approval.get("awaiting_approval")
        if fingerprint and fingerprint not in seen:
            seen.add(fingerprint)
            auc, base = summary.metrics.get("auc"), summary.baseline_metrics.get("auc")
            found.append({"fingerprint": fingerprint, "run": run.name,
                          "model": summary.artifacts.get("Trainer", {}).get("Model", ""),
                          "auc": f"{auc:.4f}" if auc is not None else "-",
                          "baseline auc": f"{base:.4f}" if base is not None else "-"})
    return found


def main(argv: list[str] | None = None) -> int:
    from settings.layout import Layout

    defaults = Layout.load()
    parser = argparse.ArgumentParser(prog="python -m tools.approval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control-dir", default=defaults.control_dir,
                        help=f"the audit log (default {defaults.control_dir})")
    parser.add_argument("--metadata-path", default=defaults.metadata_path,
                        help="local MLMD, for `list` (default METADATA_PATH)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="models waiting for approval, and the decisions so far")
    for name, help_text in (("approve", "push this model at the next run"),
                            ("reject", "never push this model")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("fingerprint", help="the model's fingerprint (16+ hex digits "
                                                 "as the run summary prints it)")
        command.add_argument("--reason", required=(name == "reject"), default="",
                             help="why (the next person reads it)")
        command.add_argument("--by", help="who (default $TAXI_OPERATOR, else login@host)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            pending = waiting(args.metadata_path, defaults.pipeline_name)
            print(f"waiting for approval ({len(pending)}):")
            for item in pending:
                print("  " + "  ".join(f"{k} {v}" for k, v in item.items()))
            decided = records.read(args.control_dir, (approvals.APPROVE, approvals.REJECT))
            if decided:
                print("decisions:")
                print("\n".join(f"  {r.line()}" for r in decided))
            return 0
        known = [p["fingerprint"] for p in waiting(args.metadata_path, defaults.pipeline_name)]
        match = [f for f in known if f.startswith(args.fingerprint)]
        record = approvals.decide(args.control_dir, match[0] if len(match) == 1 else
                                  args.fingerprint, args.command == "approve", args.reason,
                                  args.by)
    except approvals.ApprovalError as e:
        print(f"tools.approval: {e}", file=sys.stderr)
        return 2
    print(f"{record.action}d: model {record.details['fingerprint']} by {record.who}"
          + ("; the next run pushes it" if record.action == approvals.APPROVE else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

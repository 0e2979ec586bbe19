"""Contaminated data: mark a stretch of time (and optionally a filter) that no run may learn
from, with the reason; remove a mark; list them.

    python -m tools.marks add --from 2016-03-01 --to 2016-03-15 --reason "warehouse flooded"
    python -m tools.marks add --from 2016-03-01 --to 2016-03-02 --where company="Flash Cab" \\
        --reason "their meters were broken"
    python -m tools.marks list
    python -m tools.marks remove MARK_ID --reason "the counts were right after all"

Every later run leaves the marked rows out of training, evaluation and the statistics drift is
measured on (SpanExamples and SpanWindow), and says how many; the monitor leaves them out of
its reference and the bandit learns nothing from requests served inside one. Marks live in the
audit log (OUTPUT_ROOT/control/NAME/log/, or gs:// on Vertex, with --control-dir).
"""

from __future__ import annotations

import argparse
import sys

from control import marks, records
from models import features as F


def main(argv: list[str] | None = None) -> int:
    from settings.layout import Layout

    defaults = Layout.load()
    parser = argparse.ArgumentParser(prog="python -m tools.marks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control-dir", default=defaults.control_dir,
                        help=f"the audit log (default {defaults.control_dir})")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="mark a stretch of data as contaminated")
    add.add_argument("--from", dest="start", required=True,
                     help="first moment, a date (2016-03-01, midnight UTC) or a time "
                          "(2016-03-01T14:00)")
    add.add_argument("--to", dest="end", required=True, help="first moment after the stretch")
    add.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                     help="only rows with this value (repeat: all must match)")
    add.add_argument("--column", default=F.TIME_COLUMN,
                     help=f"the time column the stretch is of (default {F.TIME_COLUMN})")
    remove = commands.add_parser("remove", help="take a mark back (recorded, never silent)")
    remove.add_argument("mark")
    commands.add_parser("list", help="active marks, and the log of marks made and removed")
    for command in (add, remove):
        command.add_argument("--reason", required=True, help="why (the next person reads it)")
        command.add_argument("--by", help="who (default $TAXI_OPERATOR, else login@host)")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            mark = marks.add(args.control_dir, marks.parse_time(args.start),
                             marks.parse_time(args.end), args.column, args.reason,
                             marks.parse_where(args.where), args.by)
            print(f"marked: {mark.describe()}\nthe next run leaves these rows out; a Vertex "
                  "job reads the marks when its SpanExamples step runs")
        elif args.command == "remove":
            mark = marks.remove(args.control_dir, args.mark, args.reason, args.by)
            print(f"removed: {mark.describe()}")
        else:
            active = marks.active(args.control_dir)
            print(f"active marks ({len(active)}):")
            print("\n".join(f"  {m.describe()}" for m in active) or "  none")
            history = records.read(args.control_dir, (marks.MARK, marks.UNMARK))
            if history:
                print("log:")
                print("\n".join(f"  {r.line()}" for r in history))
    except marks.MarkError as e:
        print(f"tools.marks: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tools.ablation leaves out the rows the contamination marks in force cover, marks made
since the run that wrote the rows included (it read them all)."""

import shutil

import numpy as np

from control import marks
from data.bundled import first_rows
from tools import ablation


def test_marks_made_after_the_run_leave_their_rows_out_of_the_ablation(bundled_transform,
                                                                       tmp_path):
    root, _ = bundled_transform
    examples = tmp_path / "window"
    for split in ("Split-train", "Split-eval"):  # raw rows, as SpanWindow leaves them
        (examples / split).mkdir(parents=True)
        shutil.copy(root / "raw" / "part-00000.gz", examples / split)
    times = sorted(int(r["trip_start_timestamp"]) for r in first_rows(2400))
    start, end = times[600], times[1200]
    mark = marks.add(str(tmp_path / "control"), start, end, "trip_start_timestamp",
                     "meter fault")
    covered = sum(start <= t < end for t in times)

    def rows(found: list) -> int:
        out = tmp_path / f"arrays-{len(found)}.npz"
        data = np.load(ablation.load_arrays(str(root / "graph"), str(examples), out, 0, 1,
                                            found))
        return len(next(v for k, v in data.items() if k.startswith("train/")))

    assert rows([]) == 2400
    assert rows(marks.active(str(tmp_path / "control"))) == 2400 - covered > 0
    assert mark.id in {m.id for m in marks.active(str(tmp_path / "control"))}

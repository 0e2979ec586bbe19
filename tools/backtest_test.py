"""The backtest command on a sample of the bundled data: per-origin, mean and worst AUC beside
the gradient-boosted trees, its files, and the run report's section built from them."""

import json
import re

from data import bundled
from reporting import report, runs
from tools import backtest


def test_the_command_prints_every_origin_mean_and_worst_beside_the_trees(
        tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    bundled.write_sample(bundled.materialize(), data, 3000, seed=5)
    monkeypatch.setenv("TAXI_OUTPUT_ROOT", str(tmp_path / "outputs"))
    code = backtest.main(["--data-root", str(data), "--origins", "2", "--steps", "60",
                          "--min-rows", "300"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads((tmp_path / "outputs" / "backtest" / "backtest.json").read_text())
    assert [o["period"] for o in result["origins"]] == ["2015", "2016"]
    first, last = result["origins"]
    assert first["train_rows"] < last["train_rows"]  # each origin trains on all before it
    assert first["later_periods_auc"].keys() == {"2016"} and last["later_periods_auc"] == {}
    for origin in result["origins"]:
        assert 0.6 < origin["auc"] <= 1.0 and 0.6 < origin["reference_auc"] <= 1.0
        # The refit column: the evaluated model (rows before the evaluation's cut, 3/4 of
        # them) against the refit (every row before the origin, at the same steps per row).
        assert origin["evaluated_rows"] < origin["train_rows"]
        assert abs(origin["evaluated_rows"] - 0.75 * origin["train_rows"]) <= 2
        assert origin["refit_steps"] == round(60 * origin["train_rows"] /
                                              origin["evaluated_rows"])
        assert origin["auc"] == origin["refit_auc"]  # refit is on: the refit is pushed
        assert origin["refit_gain"] == round(origin["refit_auc"] - origin["evaluated_auc"], 4)
        shown = [origin["period"], f"{origin['train_rows']:,}", f"{origin['test_rows']:,}",
                 f"{origin['evaluated_auc']:.4f}", f"{origin['refit_auc']:.4f}",
                 f"{origin['refit_gain']:+.4f}"]
        assert re.search("^" + r"\s+".join(map(re.escape, shown)), out, re.M), out
    assert result["worst_auc"] == min(o["auc"] for o in result["origins"])
    assert f"the pushed model (refit): mean AUC {result['mean_auc']:.4f}, worst " \
        f"{result['worst_auc']:.4f}" in out
    assert f"at {result['refit_pays']} of 2 origins, by {result['mean_refit_gain']:+.4f}" in out
    # The run report shows the newest backtest, with its plot.
    pipeline_root = tmp_path / "outputs" / "pipelines" / "taxi-big-tipper"
    assert json.loads(report.backtest_path(str(pipeline_root)).read_text()) == result
    page = report.build(runs.RunSummary("taxi-big-tipper", "run-1", []), backtest={
        **result, "command": "python -m tools.backtest", "when": "today"})
    assert "Backtest: how the model does on periods it has not seen" in page
    assert "worst" in page and "data:image/png;base64," in page
    assert f"{result['mean_refit_gain']:+.4f} AUC on average" in page


def test_too_little_history_is_refused_with_what_to_change(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    bundled.write_sample(bundled.materialize(), data, 200, seed=5)
    monkeypatch.setenv("TAXI_OUTPUT_ROOT", str(tmp_path / "outputs"))
    assert backtest.main(["--data-root", str(data)]) == 2
    assert "try a shorter --period or lower --min-rows" in capsys.readouterr().err


def test_the_backtest_leaves_out_what_contamination_marks_cover(tmp_path):
    from control import marks
    from tools import backtest

    rows = [{"trip_start_timestamp": str(t), "payment_type": p}
            for t, p in ((100, "Cash"), (150, "Card"), (300, "Cash"))]
    control = str(tmp_path / "control")
    assert backtest.without_marked(rows, control) == rows
    marks.add(control, 100, 200, "trip_start_timestamp", "a broken meter",
              where={"payment_type": "Cash"})
    assert backtest.without_marked(rows, control) == rows[1:]

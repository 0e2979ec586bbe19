"""The monitor's settings: where the runs and the request log are (the shared layout), and how
sensitive its alarms are. Its --help lists these and nothing of the pipeline's."""

from __future__ import annotations

from dataclasses import dataclass

from models import features as F
from settings.framework import setting
from settings.layout import Layout

WINDOWS = ("", "hour", "day")


@dataclass
class MonitorSettings(Layout):
    """Alarms calibrated to the batch size (monitoring/feature_checks.py)."""

    monitor_false_alarm_rate: float = setting(0.05, "chance that a clean batch raises any "
                                                    "alarm (split over every check of it)")
    monitor_min_distance: float = setting(0.02, "Jensen-Shannon floor: smaller distribution "
                                                "shifts never alarm, however large the batch")
    monitor_min_share_change: float = setting(0.03, "floor for a change in the share of "
                                                    "missing or unseen values")
    monitor_min_auc_drop: float = setting(0.02, "late labels: AUC below the evaluation's by "
                                                "less than this never alarms")
    monitor_window: str = setting("", "check a request log window by window (hour or day, "
                                      "UTC), with each figure's trend; empty: the whole log "
                                      "as one batch")
    slices: tuple = setting(F.SLICES, "comma-separated features that late-label quality is "
                                      "reported by (the Evaluator's slices)")

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.monitor_window not in WINDOWS:
            problems.append("monitor_window must be hour, day or empty (the whole log)")
        if not 0.0 < self.monitor_false_alarm_rate < 1.0:
            problems.append("monitor_false_alarm_rate must be in (0, 1)")
        return problems

"""Approval before a push: with `--require-approval` a blessed model is pushed only once a
person has approved *that* model, named by its fingerprint (the sha256 of its graph and
variables: what decides its predictions). Approvals and rejections are records of the audit
log; the newest decision for a fingerprint holds, and it never applies to another model."""

from __future__ import annotations

from control import records

APPROVE, REJECT, WAITING = "approve", "reject", "waiting"


class ApprovalError(ValueError):
    """An approval that cannot be recorded; the message says why."""


def decide(control_dir: str, fingerprint: str, approve: bool, reason: str,
           who: str | None = None, **details) -> records.Record:
    if len(fingerprint) < 12:
        raise ApprovalError(f"{fingerprint!r} is not a model fingerprint (12+ hex digits, as "
                            "the run summary prints it)")
    if not approve and not reason.strip():
        raise ApprovalError("say why the model is rejected (--reason)")
    return records.append(control_dir, APPROVE if approve else REJECT, reason, who,
                          fingerprint=fingerprint, **details)


def decision(control_dir: str, fingerprint: str) -> records.Record | None:
    """The newest approval or rejection of this model (a prefix of 12+ digits names it)."""
    if not control_dir:
        return None
    found = [r for r in records.read(control_dir, (APPROVE, REJECT))
             if fingerprint.startswith(r.details["fingerprint"])
             or r.details["fingerprint"].startswith(fingerprint)]
    return found[-1] if found else None

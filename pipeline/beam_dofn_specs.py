"""Remember Beam's answer to "does this DoFn use state or timers?" per DoFn class.

Beam asks it every time it builds, translates or runs a ParDo
(`apache_beam.transforms.userstate.get_dofn_specs`), and each answer inspects the
signature of every method of the DoFn. A small local run asks ~5,600 times for ~85 DoFn
classes, ~5 s spent re-reading the same signatures (benchmarks/README.md). The answer comes
from the methods' default arguments (`DoFn.StateParam(...)`, `DoFn.TimerParam(...)`),
which belong to the class, so it is computed once per class. A DoFn instance that carries
bound methods in its own attributes (`self.process = other.method`) is not remembered: its
answer is computed each time, as Beam does.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from typing import Any

from apache_beam.transforms import userstate

_ORIGINAL: Callable[[Any], tuple[set, set]] = userstate.get_dofn_specs
_SPECS: weakref.WeakKeyDictionary[type, tuple[frozenset, frozenset]] = (
    weakref.WeakKeyDictionary())


def _by_class(dofn: Any) -> bool:
    """The answer depends on the class alone: no per-instance bound methods and no
    attribute lookup of the class's own making."""
    cls = type(dofn)
    if "__getattr__" in dir(cls) or cls.__dir__ is not object.__dir__:
        return False
    return not any(isinstance(value, types.MethodType)
                   for value in getattr(dofn, "__dict__", {}).values())


def get_dofn_specs(dofn: Any) -> tuple[set, set]:
    """Beam's get_dofn_specs, computed once per DoFn class; fresh sets each call."""
    if not _by_class(dofn):
        return _ORIGINAL(dofn)
    cls = type(dofn)
    specs = _SPECS.get(cls)
    if specs is None:
        state, timers = _ORIGINAL(dofn)
        specs = _SPECS[cls] = (frozenset(state), frozenset(timers))
    return set(specs[0]), set(specs[1])


def install() -> None:
    """Use the per-class answer in this process (idempotent). Beam's own modules look the
    function up on `userstate` at call time, so replacing it there reaches them all."""
    userstate.get_dofn_specs = get_dofn_specs


def uninstall() -> None:
    userstate.get_dofn_specs = _ORIGINAL
    _SPECS.clear()

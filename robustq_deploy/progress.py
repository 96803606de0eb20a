"""Progress reporting: tqdm bars on an interactive terminal, periodic plain lines in logs.

Long work (training epochs, attacks, downloads) shows a bar when stderr is a terminal. When it is
not (CI logs, redirected output) a bar would fill the log with carriage returns, so :func:`bar`
prints one line every ``LOG_INTERVAL_S`` seconds instead (``desc: 40% (120/300) 2.1 it/s``), and
:func:`note` prints one line per finished unit (an epoch, an attack).
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_INTERVAL_S = 30.0


def _rate(rate: float, elapsed: float, unit: str) -> str:
    """``2.10 batch/s``, or for slow units the seconds each took (``95 s/unit``) and the time so far."""
    if rate >= 0.1:
        return f"{rate:.2f} {unit}/s"
    return f"{1 / rate:.0f} s/{unit}, {elapsed / 60:.1f} min so far"


class _LogProgress:
    """Iterable wrapper printing a progress line at most every ``LOG_INTERVAL_S`` seconds."""

    def __init__(self, iterable: Iterable[T], desc: str, unit: str = "it", **_ignored):
        self.iterable = iterable
        self.desc = desc
        self.unit = unit
        self.total = len(iterable) if hasattr(iterable, "__len__") else None

    def __iter__(self) -> Iterator[T]:
        start = last = time.monotonic()
        for i, item in enumerate(self.iterable):
            yield item
            now = time.monotonic()
            if now - last >= LOG_INTERVAL_S:
                last = now
                rate = (i + 1) / (now - start)
                frac = f"{100 * (i + 1) / self.total:.0f}% ({i + 1}/{self.total})" if self.total else f"{i + 1}"
                note(f"{self.desc}: {frac} {_rate(rate, now - start, self.unit)}")

    def set_postfix(self, **_kw) -> None:
        pass

    def set_postfix_str(self, _s: str = "", **_kw) -> None:  # tqdm's API, used by verify
        pass

    def close(self) -> None:
        pass


def bar(iterable: Iterable[T], desc: str, enabled: bool = True, **kw):
    if not enabled:
        return tqdm(iterable, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, leave=False, **kw)
    return _LogProgress(iterable, desc, **kw)


def note(msg: str, enabled: bool = True) -> None:
    if enabled:
        tqdm.write(msg, file=sys.stderr)

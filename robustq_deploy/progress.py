"""Progress reporting: tqdm bars on an interactive terminal, plain lines in logs.

Long work (training epochs, attacks, downloads) shows a bar when stderr is a terminal; in CI logs
bars are off and :func:`note` prints one line per finished unit instead of carriage-return noise.
"""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def bar(iterable: Iterable[T], desc: str, enabled: bool = True, **kw) -> tqdm:
    return tqdm(iterable, desc=desc, disable=not (enabled and sys.stderr.isatty()), leave=False, **kw)


def note(msg: str, enabled: bool = True) -> None:
    if enabled:
        tqdm.write(msg, file=sys.stderr)

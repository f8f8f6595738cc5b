"""Small pieces several subcommands share: argument types, opening an
events input (a file or ``-``) with its format, and the byte progress bar of
commands that read a large input file."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, cast

from scenetrigger.sources import Format, detect_format
from triggers.durations import parse_duration_ms
from triggers.errors import SceneTriggerError


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def duration(text: str) -> int:
    """An argparse type: a duration (``500ms``, ``5s``, ``2m`` or integer ms) in ms."""
    try:
        return parse_duration_ms(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class ByteProgress:
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update_to(self, position: int) -> None:
        self._bar.update(position - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def progress_bar(size: int | None, disabled: bool, desc: str) -> ByteProgress | None:
    """Bytes read of the input, on stderr, only when a person is watching."""
    if disabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return ByteProgress(tqdm(total=size, unit="B", unit_scale=True, file=sys.stderr, desc=desc))


def pick_format(requested: str, stream: Any, name: str) -> tuple[Format, Iterable[bytes]]:
    """The format to read, and the lines to read it from (the first line,
    read to detect the format, is put back in front)."""
    if requested != "auto":
        return cast(Format, requested), stream
    first = stream.readline()
    return detect_format(first, name), itertools.chain([first], stream)


@contextlib.contextmanager
def open_input(path: str) -> Iterator[tuple[Any, int | None]]:
    """The binary stream of ``path`` (``-``: stdin) and its size when known."""
    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        fh = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SceneTriggerError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size

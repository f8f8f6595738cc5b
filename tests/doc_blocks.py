"""The shell examples of a doc, to run them as written: each fenced ``sh``
block, and the answer a block promises (its last lines' ``# ...`` comment)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
_FENCES = {"sh": _FENCE, "bash": re.compile(r"^```bash\n(.*?)^```", re.S | re.M)}


@dataclass(frozen=True)
class Block:
    script: str  # the commands, as written
    expected: str | None  # the trailing "# ..." comment without "# ", if any
    line: int  # the doc's line of the fence, for messages


def sh_blocks(path: Path, lang: str = "sh") -> list[Block]:
    """``lang``: ``sh`` blocks, or ``bash`` (a walk-through run in one shell)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for match in _FENCES[lang].finditer(text):
        body = match.group(1)
        lines = body.rstrip("\n").split("\n")
        expected = None
        if lines and lines[-1].startswith("# "):
            expected = lines[-1][2:]
            lines = lines[:-1]
        out.append(Block("\n".join(lines) + "\n", expected,
                         text.count("\n", 0, match.start()) + 1))
    return out

"""The Content-Security-Policy of a page served with its inline script and
style (the demo's page, the console's): exactly those, by hash, and nothing
else."""

from __future__ import annotations

import base64
import hashlib
import re

_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
_STYLE = re.compile(rb"<style>(.*?)</style>", re.DOTALL)


def content_security_policy(page: bytes, own_files: bool = False) -> str:
    """Allow exactly the page's own inline script and style (by hash), and with
    ``own_files`` scripts and styles the same server serves; nothing else."""
    own = "'self' " if own_files else ""

    def hashes(pattern: re.Pattern[bytes]) -> str:
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'"
            for m in pattern.findall(page)
        )

    return (
        f"default-src 'none'; script-src {own}{hashes(_SCRIPT)}; "
        f"style-src {own}{hashes(_STYLE)}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )

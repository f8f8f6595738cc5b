"""An email channel needs the sender's postal address (every marketing email
ends with it): check-config fails without one, naming the channel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from config.loader import check_text

SCENES = "scenes:\n  v: {kind: repeat, when: {type: view}, count: 3, within: 30m}\n"
MAIL = 'channels:\n  mail: {type: email, host: smtp.example, sender: "Shop <news@shop.example>"'


def test_an_email_channel_without_a_postal_address_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mail.yaml"
    path.write_text(SCENES + MAIL + "}\n")
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"{path}:4: channel 'mail', field 'postal_address': required field is missing" \
        in done.stderr


def test_with_the_address_the_channel_is_valid() -> None:
    report = check_text(SCENES + MAIL + ', postal_address: "Shop Ltd, 1 Main St"}\n')
    assert [str(p) for p in report.errors] == []

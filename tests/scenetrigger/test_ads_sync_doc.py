"""docs/ads.md's sync, return and consent commands (from "## Syncing to ad
platforms" to the end; the audience sections are run by test_ads_doc.py), run as written against the local ad platforms, a
real Redis and a real ``serve``: each block's output holds what the doc says
under it. The doc's ``ads:`` config is used as written, pointed at the
local servers (``base_url``, the webhook's ``url``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.loader import load_config_text
from tests.channels.ads_fixtures import Platforms, platforms_in_thread
from tests.doc_blocks import sh_blocks
from tests.services import REPO, free_port, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
DOC = REPO / "docs" / "ads.md"
FIRST = "## Syncing to ad platforms"  # this side's sections run from here to the slots'
SLOTS = "## On-site slots"  # tests/scenetrigger/test_slots_doc.py runs those
BIN = Path(sys.executable).parent
SECRETS = {"META_ACCESS_TOKEN": "meta-token", "GOOGLE_ADS_TOKEN": "google-token",
           "GOOGLE_ADS_DEVELOPER_TOKEN": "dev-token", "TIKTOK_ACCESS_TOKEN": "tiktok-token",
           "AUDIENCE_HOOK_SECRET": "hook-secret"}


def holds(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and got[k] == v for k, v in want.items())
    return bool(got == want)


def doc_config(platforms: Platforms, prefix: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"^```yaml\n(.*?)^```", text[text.index(FIRST):], re.S | re.M)
    assert block is not None
    config = yaml.safe_load(block.group(1))
    paths = {"meta": "/v21.0", "google": "/v24", "tiktok": "/open_api/v1.3"}
    for name, sink in config["ads"]["sinks"].items():
        if name == "hook":
            sink["url"] = platforms.by_name["hook"].base + "/audiences"
        else:
            sink["base_url"] = platforms.by_name[name].base + paths[name]
    config["scenes"] = {"promo_arrival": {"kind": "arrival", "per": "page",
                                          "when": {"page": {"prefix": "/promo"}}}}
    config["delivery"]["redis_prefix"] = prefix
    text = json.dumps(config)
    load_config_text(text)  # the doc's section validates
    return text


def test_the_ads_doc_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    if shutil.which("jq") is None or shutil.which("curl") is None:
        pytest.fail("curl and jq are needed to run the doc's examples")
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start, end = lines.index(FIRST) + 1, lines.index(SLOTS) + 1
    blocks = [b for b in sh_blocks(DOC) if start < b.line < end]
    assert len([b for b in blocks if b.expected is not None]) >= 6
    prefix = f"adoc{uuid.uuid4().hex[:6]}:"
    port = free_port()
    env = {**os.environ, **SECRETS, "SCENETRIGGER_REDIS_URL": redis_url,
           "SCENETRIGGER_HASH_KEY": uuid.uuid4().hex, "SCENETRIGGER_ADMIN_TOKEN": "adm-doc",
           "SERVE": f"http://127.0.0.1:{port}", "PATH": f"{BIN}:{os.environ['PATH']}"}
    with platforms_in_thread() as platforms:
        (tmp_path / "ads.yaml").write_text(doc_config(platforms, prefix))
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "scenetrigger"), "serve", "--config", "ads.yaml", "--port", str(port)],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(port, proc, log, 90)
            for block in blocks:
                script = block.script.replace("users import contacts.jsonl",
                                              f"users import contacts.jsonl --prefix {prefix}")
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", script],
                                      cwd=tmp_path, env=env, capture_output=True, text=True,
                                      timeout=120, check=False)
                assert done.returncode == 0, f"line {block.line}: {done.stderr}"
                if block.expected is not None:
                    got = json.loads(done.stdout)
                    assert holds(got, json.loads(block.expected)), \
                        f"line {block.line}: {done.stdout}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        meta = platforms.by_name["meta"]
        # ann and bob went in; bob (unsubscribe) and ann (erasure) came out
        assert sum(len(v) for v in meta.added.values()) == 2
        assert sum(len(v) for v in meta.removed.values()) == 2
        assert meta.members["2385000001"] == set()

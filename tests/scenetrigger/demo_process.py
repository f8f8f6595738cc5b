"""Run ``scenetrigger demo`` as a subprocess and read what it prints (test helper)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DemoProcess:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    url: str | None = None
    stderr: str = ""
    _ready: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.strip().startswith("live page"):
                self.url = line.split()[-1]
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> str:
        if not self._ready.wait(timeout) or self.url is None:
            self.stop()
            raise AssertionError(f"demo did not print its URL:\n{self.output()}")
        return self.url

    def wait_line(self, predicate: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate in line:
                    return line
            if self.proc.poll() is not None and not self._reader_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {predicate!r}:\n{self.output()}")

    def _reader_alive(self) -> bool:
        return any(t.name == f"demo-reader-{self.proc.pid}" for t in threading.enumerate())

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"demo did not stop in {timeout} s:\n{self.output()}") from None
        self._close()
        return code

    def output(self) -> str:
        return "\n".join(self.lines) + ("\n--- stderr ---\n" + self.stderr if self.stderr else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        for thread in threading.enumerate():
            if thread.name == f"demo-reader-{self.proc.pid}":
                thread.join(10)
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()


def start_demo(*args: str) -> DemoProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scenetrigger.cli.main", "demo", "--port", "0", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8",
    )
    demo = DemoProcess(proc)
    threading.Thread(target=demo._read, name=f"demo-reader-{proc.pid}", daemon=True).start()
    return demo


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()

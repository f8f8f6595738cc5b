"""The worker's ``--app-id`` (consumer group and changelog names) defaults to
its ``--topic-prefix``: two prefixes on one cluster do not share a group."""

from __future__ import annotations

import pytest

from scenetrigger.cli.main import build_parser
from scenetrigger.cli.run.worker import build_settings


def settings_for(*argv: str) -> object:
    args = build_parser(["worker", *argv]).parse_args(["worker", *argv])
    return build_settings(args)


@pytest.mark.parametrize(("argv", "app_id"), [
    ((), "scenetrigger"),
    (("--topic-prefix", "shop-a"), "shop-a"),
    (("--topic-prefix", "shop-a", "--app-id", "mine"), "mine"),
])
def test_app_id_defaults_to_the_topic_prefix(argv: tuple[str, ...], app_id: str) -> None:
    settings = settings_for("--broker", "127.0.0.1:1", *argv)
    assert settings.app_id == app_id  # type: ignore[attr-defined]


def test_two_prefixes_get_two_groups() -> None:
    a = settings_for("--broker", "127.0.0.1:1", "--topic-prefix", "a")
    b = settings_for("--broker", "127.0.0.1:1", "--topic-prefix", "b")
    assert a.app_id != b.app_id  # type: ignore[attr-defined]

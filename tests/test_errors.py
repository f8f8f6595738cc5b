"""One exception tree: every exception class scenetrigger defines derives
from :class:`triggers.errors.SceneTriggerError`, and a package with an
``errors`` module derives its own from that module's base (``except
ChannelError`` catches every delivery error raised on purpose)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from agents.errors import AgentError
from channels.errors import ChannelError
from tests.test_layers import LAYERS
from triggers.errors import SceneTriggerError

PACKAGE_BASES: dict[str, type[SceneTriggerError]] = {"channels": ChannelError,
                                                      "agents": AgentError}


def defined_exceptions(package: str) -> list[type[BaseException]]:
    found = []
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        module = importlib.import_module(info.name)
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name:
                found.append(value)
    return found


def test_every_exception_is_under_the_one_root_and_its_package_base() -> None:
    problems = []
    seen = 0
    for package in LAYERS:
        base = PACKAGE_BASES.get(package, SceneTriggerError)
        for cls in defined_exceptions(package):
            seen += 1
            if cls is base or cls is SceneTriggerError:
                continue
            if not issubclass(cls, base):
                problems.append(f"{cls.__module__}.{cls.__qualname__} is not a {base.__name__}")
    assert seen > 15  # the walk found the tree's exceptions
    assert problems == []

"""Shared pytest fixtures. Keep this minimal: put helpers in their own modules."""

import os

from hypothesis import settings

from tests.services import kafka_bootstrap, redis_cluster, redis_url

# Under CI the property tests draw the same examples every run (no flakes from a
# new draw; a developer's run still explores: its failures land in .hypothesis).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

__all__ = ["kafka_bootstrap", "redis_cluster", "redis_url"]

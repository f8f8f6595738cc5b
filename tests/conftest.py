"""Shared pytest fixtures. Keep this minimal: put helpers in their own modules."""

from tests.services import kafka_bootstrap, redis_cluster, redis_url

__all__ = ["kafka_bootstrap", "redis_cluster", "redis_url"]

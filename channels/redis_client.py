"""The one place that builds Redis clients, for one node or a Redis Cluster.

``--redis-url redis://HOST:PORT/DB`` may name a standalone Redis or any node
of a Redis Cluster: :func:`redis_client` asks the node (``INFO cluster``)
once per URL and returns redis-py's ``RedisCluster`` (asyncio) for a cluster
node, else ``Redis``. ``redis-cluster://HOST:PORT`` (``rediss-cluster://``
for TLS) forces the cluster client without asking.

The keys are laid out for a cluster everywhere (docs/deploy.md, "Redis"):
a user's keys carry the ``{user}`` hash tag (:func:`user_tag`), so the
multi-key scripts and transactions of one user stay in one slot; the
pending (deferred and leased) deliveries are spread over
:data:`LEASE_BUCKETS` sorted sets by user hash (:func:`lease_bucket`).
Commands over keys of many users go through :func:`get_many` and
per-key pipelines, which a cluster routes node by node.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from channels.errors import ChannelError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV = "SCENETRIGGER_REDIS_URL"
CLUSTER_SCHEMES = {"redis-cluster://": "redis://", "rediss-cluster://": "rediss://"}
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)
# Fixed: a user's bucket (and the key of the user's dedupe claims) must not
# move under running deliveries. `scenetrigger migrate` re-buckets old data.
LEASE_BUCKETS = 16
_PROBE_TIMEOUT_S = 3.0
_cluster_urls: dict[str, bool] = {}  # url -> is a cluster node (asked once per process)


def redis_url_or_env(url: str | None) -> str:
    """``--redis-url``, else $SCENETRIGGER_REDIS_URL, else the local default.

    Checked here so that a mistyped URL is one clear line, not redis-py's
    traceback from deep inside the first connection."""
    source = "--redis-url" if url else REDIS_URL_ENV
    chosen = url or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    if not chosen.startswith(REDIS_SCHEMES):
        raise ChannelError(f"{source} {chosen!r} is not a Redis URL: use redis://HOST:PORT/DB "
                           "(or rediss:// for TLS, unix:///path.sock, redis-cluster://HOST:PORT "
                           "to insist on a Redis Cluster)")
    return chosen


def redis_client(url: str, *, decode_responses: bool = False,
                 wait_for_connection_s: float | None = None, **options: Any) -> Any:
    """A ``redis.asyncio`` client for ``url``: ``RedisCluster`` when the URL
    forces it or names a cluster node, else ``Redis`` (connections open
    lazily, as redis-py's own ``from_url``). ``wait_for_connection_s``: on
    one node, a request past the pool's ``max_connections`` (redis-py: 100)
    waits that long for a free connection instead of failing at once (a
    server's burst of requests: ``serve``)."""
    for scheme, plain in CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return _cluster(plain + url[len(scheme):], decode_responses, options)
    if url.startswith("unix://") or not is_cluster_url(url):
        if wait_for_connection_s is not None:
            options.setdefault("max_connections", 100)
            pool = aioredis.BlockingConnectionPool.from_url(
                url, decode_responses=decode_responses, timeout=wait_for_connection_s,
                **options)
            return aioredis.Redis.from_pool(pool)
        return aioredis.Redis.from_url(url, decode_responses=decode_responses, **options)
    return _cluster(url, decode_responses, options)


def _cluster(url: str, decode_responses: bool, options: dict[str, Any]) -> Any:
    # A cluster has database 0 only: /0 in the URL is accepted and dropped.
    base, _, db = url.rpartition("/")
    if db.isdigit() and base.count("/") >= 2:
        if db != "0":
            raise ChannelError(f"{url!r}: a Redis Cluster has database 0 only")
        url = base
    # Per node. redis-py's cluster client raises past its limit (100) rather
    # than wait: room for a deliver's sends in flight and the bucket walk.
    options.setdefault("max_connections", 512)
    return RedisCluster.from_url(url, decode_responses=decode_responses, **options)


def is_cluster_url(url: str) -> bool:
    """Whether the node ``url`` names runs in cluster mode (``INFO cluster``),
    asked once per URL and process. A node that does not answer is taken
    for a standalone one: its client then fails as before, on first use."""
    known = _cluster_urls.get(url)
    if known is None:
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=_PROBE_TIMEOUT_S,
                                      socket_timeout=_PROBE_TIMEOUT_S) as probe:
                info = probe.info("cluster")
        except redis.RedisError:
            return False  # not remembered: the next client asks again
        known = _cluster_urls[url] = str(info.get("cluster_enabled", 0)) == "1"
    return known


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


async def get_many(client: Any, keys: Sequence[str]) -> list[Any]:
    """MGET of keys in any slots (a cluster splits it by slot, in order)."""
    if not keys:
        return []
    if is_cluster(client):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


def user_tag(user_id: str) -> str:
    """The hash tag of a user's keys: all of them in one cluster slot."""
    return f"{{{user_id}}}"


def lease_bucket(user_id: str) -> int:
    """The user's pending-delivery bucket (stable across processes and versions)."""
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % LEASE_BUCKETS


def bucket_tag(bucket: int) -> str:
    """The hash tag of one bucket's sorted set, payloads, tries and claims."""
    return f"{{d{bucket:02d}}}"

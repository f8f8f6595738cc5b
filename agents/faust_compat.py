"""Every use of Faust's (and aiokafka's) private API, in one place.

Checked against faust-streaming 0.15.3, mode-streaming 0.7.1 and aiokafka
0.14.0 (``CHECKED_AGAINST``); :func:`check_versions` logs a warning
when the installed versions differ, since each helper below leans on
internals that a release may change. Recheck all of them when upgrading:

* :func:`ack_now`: ``Stream.ack`` without its coroutine (the sweep acks
  settled messages from a timer): ``Stream._on_stream_event_out`` and
  ``Stream._on_message_out``.
* :func:`current_event`: make a message the current event of the running
  task (``faust.streams._current_event``), so table writes from the sweep go
  to that message's changelog partition (``Table.partition_for_key``).
* :func:`rebalancing` and :func:`allow_producer_buffer`: ``App.rebalancing``
  and ``Producer.buffer.max_messages``.
* :func:`idempotent_producers`: the aiokafka driver's
  ``Producer._settings_extra`` (Faust turns idempotence on only inside
  transactions).
* :func:`partition_items`, :func:`remember_partition` and
  :class:`PartitionTable`: per-partition iteration of a table's store
  (RocksDB ``_db_for_partition`` and ``_visible_items``; the memory store's
  ``_key_partition``).
* :func:`on_changelog_send`: wraps a table's ``send_changelog`` (called by
  ``Table.on_key_set`` and ``on_key_del``) to see each write's future.
* :meth:`PartitionTable.write_many`: a settle's writes without Faust's table
  layer: RocksDB ``_db_for_partition``, ``_key_index`` and
  ``use_rocksdict`` (the memory store's ``data``), the table's
  ``changelog_topic`` and ``data.set_persisted_offset`` (what
  ``Collection._on_changelog_sent`` does per write), the aiokafka driver's
  ``Producer._producer`` and that producer's ``client``,
  ``_message_accumulator`` (``_batches``, ``_append_batch``,
  ``create_builder``, ``_closed``, ``_exception``) and ``MessageBatch.append``.
* :func:`settle_while_waiting_empty`: wraps ``Consumer.wait_empty``.
* :func:`seek_uncommitted_to_beginning` and :func:`hold_flow_until_seek`:
  wrap ``Consumer.seek_to_committed``; ``Consumer.stop_flow``.
* :func:`refresh_metadata`: an aiokafka consumer's ``_client`` (a consumer
  without a group learns of a new topic or partition only from a metadata
  update; aiokafka has no public call for one). ``tests/test_layers.py``
  fails on an aiokafka private attribute used anywhere else.

Settling while Faust waits (``settle_while_waiting_empty``):

With ``stream_wait_empty`` Faust waits (``Consumer.wait_empty``) until every
message taken is acked, at a rebalance and when the worker stops
(``App.on_stop`` -> ``_stop_consumer``). The agent defers its acks
(``agents.app``): a partition's last batch is acked by the agent when more
of its messages come, or by the sweep once the batch is quiet. Neither
happens at a stop: the flow is stopped before the wait, so no message comes,
and the sweep is an app timer, which ends as soon as the app is stopping.
Faust then waited for the batches forever (SIGKILL after a minute).

:func:`settle_while_waiting_empty` wraps ``consumer.wait_empty`` so that,
for as long as Faust waits, every partition whose triggers are acknowledged
is settled (states written, messages acked) every ``interval_s``; Faust's
wait then ends, and its final commit includes those offsets.

Two rebalance holes the worker closes:

1. Lost partitions with no committed offset. Faust hands aiokafka its *live*
   set of active partitions for a fetch (``Consumer._get_active_partitions``)
   and empties that set while it pauses partitions during a rebalance;
   aiokafka's ``Fetcher.fetched_records`` reads an empty set as "every
   partition". So a fetch in flight across a rebalance can return the
   records of newly assigned (still paused) stream partitions; Faust drops
   them (flow stopped or partition not active) and aiokafka's position has
   moved past them. Faust then "seeks stream partitions to committed
   offsets", but aiokafka's ``seek_to_committed`` only seeks partitions
   whose committed offset is > 0: a partition nobody committed yet (its owner
   died within its first commit interval) stays at the end and its events
   are never taken. :func:`seek_uncommitted_to_beginning` makes that seek
   also put such partitions at their beginning (``auto_offset_reset``
   earliest, what a fresh position would have been).

2. A commit that crawls after a takeover. Faust's recovery resumes the
   stream partitions with the flow already running and only then seeks them
   to their committed offsets, which takes a round trip per partition.
   Messages taken meanwhile move Faust's read offset ahead; the seek puts it
   back, the next message seen looks like a jump and Faust records a "gap"
   over offsets that are also acked. The duplicates break Faust's run of
   consecutive acked offsets, so each commit advances by one offset. Stopping
   the flow when the table has recovered (:func:`hold_flow_until_seek`, just
   before Faust resumes and seeks) means no message is taken until the seek
   is done; Faust resumes the flow itself right after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any

from aiokafka.structs import TopicPartition
from faust.streams import _current_event

log = logging.getLogger(__name__)

CHECKED_AGAINST = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1",
                   "aiokafka": "0.14.0"}


def check_versions() -> dict[str, str]:
    """The installed versions that differ from ``CHECKED_AGAINST`` (logged)."""
    differ = {}
    for name, checked in CHECKED_AGAINST.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != checked:
            differ[name] = installed
    if differ:
        log.warning("Faust internals were checked against other versions: recheck "
                    "agents/faust_compat.py", extra={"checked": CHECKED_AGAINST,
                                                     "installed": differ})
    return differ


# -- aiokafka clients -------------------------------------------------------------

async def refresh_metadata(consumer: Any) -> None:
    """Ask the cluster for the metadata of every topic now, so that
    ``partitions_for_topic`` sees a topic created since the consumer started."""
    await consumer._client.force_metadata_update()


# -- streams and tables ---------------------------------------------------------

def ack_now(stream: Any, event: Any) -> None:
    """``Stream.ack`` without a coroutine (it never awaits), for the sweep."""
    message = event.message
    last = event.ack()
    stream._on_stream_event_out(message.tp, message.offset, stream, event)
    if last:
        stream._on_message_out(message.tp, message.offset, message)


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Within the block, ``event`` is the running task's current event: table
    writes (``Table.partition_for_key``) go to its partition's changelog."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def rebalancing(app: Any) -> bool:
    return bool(getattr(app, "rebalancing", False))


def idempotent_producers() -> None:
    """Every Faust producer of this process sends with aiokafka's
    ``enable_idempotence`` (with Faust's ``acks=-1``, i.e. all): a send
    retried after a lost acknowledgement, e.g. when a broker dies, is stored
    once. The only Faust apps here are the worker's."""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.Producer
    if getattr(cls, "_scenetrigger_idempotent", False):
        return
    original = cls._settings_extra

    def settings_extra(self: Any) -> Mapping[str, Any]:
        return {"enable_idempotence": True, **original(self)}

    setattr(cls, "_settings_extra", settings_extra)  # noqa: B010 - a method, patched
    setattr(cls, "_scenetrigger_idempotent", True)  # noqa: B010


def allow_producer_buffer(app: Any, messages: int) -> None:
    """Let ``messages`` wait in Faust's producer buffer before it stops the
    stream (default 100, then one ``wait_for`` and a warning per message)."""
    app.producer.buffer.max_messages = messages


def partition_items(table: Any, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """The stored ``(key, value)`` pairs of one table partition.

    Faust has no public per-partition iteration: RocksDB keeps one database per
    partition (``_db_for_partition``); the memory store remembers each key's
    partition in ``_key_partition`` (see :func:`remember_partition`).
    """
    store = table.data
    if hasattr(store, "_db_for_partition"):
        db = store._db_for_partition(partition)
        yield from store._visible_items(db)
        return
    owners = getattr(store, "_key_partition", {})
    for key, value in list(store.data.items()):
        if owners.get(key) == partition and value is not None:
            yield key, value


def remember_partition(table: Any, key: bytes, partition: int) -> None:
    """Memory store only: record a live write's partition, as Faust does for
    recovered keys, so per-partition scans and revocation see it too."""
    remember_partition_of(table.data, key, partition)


def remember_partition_of(store: Any, key: bytes, partition: int) -> None:
    owners = getattr(store, "_key_partition", None)
    if owners is not None:
        owners[key] = partition


class PartitionTable:
    """The table as one partition's store sees it (memory stores also learn
    the key's partition, as Faust's own recovery records it)."""

    __slots__ = ("_fallback", "_memory", "_partition", "_table")

    def __init__(self, table: Any, partition: int, memory: bool) -> None:
        self._table = table
        self._partition = partition
        self._memory = memory
        self._fallback: Any = None  # the last changelog send made through Faust

    def write_many(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Write ``items`` in order (a None value deletes the key), as that
        many table writes would, at a fraction of their cost: one RocksDB
        write batch, and the changelog records appended in order straight to
        the Kafka producer's batches of the changelog partition. A Faust table
        write costs ~70 us: a ``FutureMessage`` through Faust's producer buffer,
        drained one awaited send at a time, and a persisted-offset write to
        RocksDB per acknowledgement (here one per call). Appended before this
        returns, the records are covered by the producer flush that Faust's
        commit runs first, as the buffered ones were. The sink of
        :func:`on_changelog_send` gets the future of each producer batch the
        records went into.

        Faust's own writes instead while the producer does not know the
        changelog partition's leader yet (the first settles: its sends wait
        for the metadata), and until the last of those is acknowledged, so
        the records never overtake each other; also without a running
        producer, or with python-rocksdb instead of rocksdict."""
        if not items:
            return
        table, partition = self._table, self._partition
        producer: Any = getattr(table.app.producer, "_producer", None)
        accumulator = getattr(producer, "_message_accumulator", None)
        topic = table.changelog_topic.get_topic_name()
        fallback = self._fallback
        if (accumulator is None or accumulator._closed or accumulator._exception is not None
                or not (self._memory or getattr(table.data, "use_rocksdict", False))
                or (fallback is not None and not fallback.done())
                or not producer.client.cluster.partitions_for_topic(topic)):
            self._write_through_faust(items)
            return
        self._fallback = None
        _store_many(table.data, partition, items, self._memory)
        tp = TopicPartition(topic, partition)
        queued = accumulator._batches.get(tp)
        batch = queued[-1] if queued else None
        touched = [] if batch is None else [batch]
        last: Any = None
        for key, value in items:
            last = None if batch is None else batch.append(key, value, None)
            if last is None:  # none open, or full: a new one (send() would wait instead)
                batch = accumulator._append_batch(accumulator.create_builder(), tp)
                touched.append(batch)
                last = batch.append(key, value, None)
        sink = getattr(table, _CHANGELOG_SINK, None)
        if sink is not None:
            for written in touched:
                sink(written.future)
        store = table.data

        def persisted(future: Any) -> None:
            if not future.cancelled() and future.exception() is None:
                store.set_persisted_offset(tp, future.result().offset)

        last.add_done_callback(persisted)

    def _write_through_faust(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """What ``Table.__setitem__``/``__delitem__`` do (changelog send, then
        the store), keeping the last send's future."""
        table, partition = self._table, self._partition
        for key, value in items:
            if value is None:
                self._fallback = table.send_changelog(partition, key, None,
                                                      value_serializer="raw")
                table.data.pop(key, None)
            else:
                self._fallback = table.send_changelog(partition, key, value)
                table.data[key] = value
                if self._memory:
                    remember_partition(table, key, partition)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._table.get(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._table[key] = value
        if self._memory:
            remember_partition(self._table, key, self._partition)

    def __delitem__(self, key: bytes) -> None:
        del self._table[key]


def _store_many(store: Any, partition: int, items: Sequence[tuple[bytes, bytes | None]],
                memory: bool) -> None:
    """The table store's side of :meth:`PartitionTable.write_many`."""
    if memory:
        data = store.data
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
                remember_partition_of(store, key, partition)
        return
    import rocksdict  # Faust's RocksDB binding when installed (store.use_rocksdict)

    batch = rocksdict.WriteBatch(raw_mode=True)
    index = store._key_index
    for key, value in items:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
            index[key] = partition
    store._db_for_partition(partition).write(batch)


_CHANGELOG_SINK = "_scenetrigger_changelog_sink"


def on_changelog_send(table: Any, sink: Callable[[Any], None]) -> None:
    """Pass the future of every changelog write of ``table`` to ``sink``
    (of :meth:`PartitionTable.write_many`: each producer batch's)."""
    setattr(table, _CHANGELOG_SINK, sink)
    original: Callable[..., Any] = table.send_changelog

    def send_changelog(*args: Any, **kwargs: Any) -> Any:
        future = original(*args, **kwargs)
        sink(future)
        return future

    table.send_changelog = send_changelog


# -- waiting for the streams: settle meanwhile ------------------------------------

# Markers of the wrappers installed on a consumer (each wrapper once).
_SETTLE_INSTALLED = "_scenetrigger_settle_while_waiting"
SETTLE_INTERVAL_S = 0.02


def settle_while_waiting_empty(consumer: Any, settle: Callable[[], None],
                               interval_s: float = SETTLE_INTERVAL_S) -> None:
    """Wrap ``consumer.wait_empty`` to call ``settle()`` every ``interval_s``
    while it runs (``settle`` must not await: it runs beside the agent).
    Idempotent."""
    if getattr(consumer, _SETTLE_INSTALLED, False):
        return
    original: Callable[[], Awaitable[None]] = consumer.wait_empty

    async def settle_loop() -> None:
        while True:
            try:
                settle()
            except Exception:  # a failed trigger send: keep settling the rest
                log.exception("settle while waiting for the streams failed")
            await asyncio.sleep(interval_s)

    async def wait_empty() -> None:
        settler = asyncio.ensure_future(settle_loop())
        try:
            await original()
        finally:
            settler.cancel()

    consumer.wait_empty = wait_empty
    setattr(consumer, _SETTLE_INSTALLED, True)


# -- rebalances -------------------------------------------------------------------

_SEEK_INSTALLED = "_scenetrigger_seek_uncommitted"


def seek_uncommitted_to_beginning(consumer: Any, topics: Collection[str]) -> None:
    """Wrap ``consumer.seek_to_committed`` (Faust's ``perform_seek`` calls it
    on every rebalance) so partitions of ``topics`` with no committed offset
    (or offset 0, which aiokafka does not seek either) are sought to their
    earliest offset. Idempotent."""
    if getattr(consumer, _SEEK_INSTALLED, False):
        return
    original: Callable[[], Awaitable[Mapping[Any, int | None]]] = consumer.seek_to_committed
    wanted = frozenset(topics)

    async def seek_to_committed() -> Mapping[Any, int | None]:
        committed = await original()
        fresh = [tp for tp, offset in committed.items() if tp.topic in wanted and not offset]
        if fresh:
            earliest: Mapping[Any, int] = await consumer.earliest_offsets(*fresh)
            # In the consumer's thread, like Faust's own seeks.
            await consumer.seek_wait({tp: earliest.get(tp) or 0 for tp in fresh})
            log.info("uncommitted partitions sought to their beginning", extra={
                "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in fresh)})
        return committed

    consumer.seek_to_committed = seek_to_committed
    setattr(consumer, _SEEK_INSTALLED, True)


def hold_flow_until_seek(consumer: Any) -> None:
    """From ``table.on_recover``: stop taking messages until Faust has sought
    the stream partitions (``Recovery.on_recovery_completed`` resumes the
    flow after its ``perform_seek``)."""
    consumer.stop_flow()

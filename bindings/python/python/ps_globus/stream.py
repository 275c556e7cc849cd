"""Streams: ProxyStore's ``StreamProducer`` / ``StreamConsumer`` over Globus itself or a
Redis stream, and a small face of them for code that does not use ProxyStore's classes.

ProxyStore's stream events are pickles, and its consumer builds a store from the
configuration inside each one: a file planted in a shared collection, or an entry on a
Redis server, would run code in every consumer. So:

* :class:`GlobusPublisher` / :class:`GlobusSubscriber` (``MessagePublisher`` /
  ``MessageSubscriber``) send each message as a file beside the objects, in the same
  Globus batch -- no broker -- sealed with HMAC-SHA256 under a key file of local
  configuration (``ps-globus stream key``; the same file at every site). They refuse to
  start without one. A message that does not open under the key is dropped and counted
  (``rejected``) before its bytes reach ProxyStore, and the subscriber keeps waiting for
  the genuine one. Each event's store configuration is replaced with the subscriber's own
  store over its own connector: an event says which object, never where this process's
  token goes.
* :class:`RedisStreamPublisher` / :class:`RedisStreamSubscriber` use a Redis *stream*
  (``XADD``/``XREAD``): a subscriber that starts late replays every message, where
  ProxyStore's pub/sub shim drops what nobody was listening for. Without ``key_file``,
  **whoever can write to the server can run code in the consumers** (as with ProxyStore's
  shims); with one, messages are sealed as on Globus.

::

    from proxystore.store import Store
    from proxystore.stream import StreamConsumer, StreamProducer
    from ps_globus.proxystore import GlobusConnector
    from ps_globus.stream import GlobusPublisher, GlobusSubscriber

    connector = GlobusConnector('results')
    producer = StreamProducer(GlobusPublisher(connector), stores={'t': Store('r', connector)})
    producer.send('t', array); producer.close(topics=['t'])
    # at another site:
    for value in StreamConsumer(GlobusSubscriber(GlobusConnector('results'), 't')):
        ...
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from typing import Any

from ps_globus import _core
from ps_globus.errors import InvalidInput, WaitTimeout
from ps_globus.proxystore import GlobusConnector, PsGlobusKey, RedisConnector

#: The only key type a sealed Globus event may name.
_KEY_TYPE = f'{PsGlobusKey.__module__}.{PsGlobusKey.__qualname__}'


def default_key_file() -> str:
    """The key file the shims use by default: ``stream.key`` in the state directory
    (``$PS_GLOBUS_HOME``), where ``ps-globus stream key`` writes it."""
    return os.fspath(_core.default_stream_key_file())


def create_key_file(path: str | os.PathLike[str] | None = None) -> str:
    """Makes a new key file (default :func:`default_key_file`), readable by its owner
    only; an existing one is never replaced. Copy it to the other sites (scp)."""
    target = default_key_file() if path is None else os.fspath(path)
    return os.fspath(_core.create_stream_key(target))


def _options(connector: Any) -> str:
    return connector._core.config_json()


class _Subscriber:
    """A ``MessageSubscriber`` over a ``_core.MessageSubscriber``."""

    def __init__(self, core: Any, timeout: float | None) -> None:
        self._core = core
        self._timeout = timeout
        self._closed = False
        # Messages read ahead: one crossing into the engine brings every message that is
        # here already.
        self._ahead: collections.deque[bytes] = collections.deque()

    def __iter__(self) -> _Subscriber:
        return self

    def __next__(self) -> bytes:
        return self.next_message()

    @property
    def rejected(self) -> int:
        """How many messages were dropped because they did not open under the key."""
        return self._core.rejected

    @property
    def position(self) -> int:
        """The position of the next message."""
        return self._core.position - len(self._ahead)

    def _next_raw(self) -> bytes:
        if self._closed:
            raise StopIteration
        if not self._ahead:
            self._ahead.extend(self._core.next_batch(self._timeout))
        message = self._ahead.popleft() if self._ahead else None
        if message is None:
            raise WaitTimeout(
                f'no message at position {self._core.position} within {self._timeout} s',
                kind='Timeout',
                transient=True,
                hint='the producer may not have published yet: wait longer (timeout=None '
                'waits a day)',
            )
        return message

    def next_message(self) -> bytes:
        """The next genuine message, waiting up to the subscriber's ``timeout``."""
        return self._next_raw()

    def close(self) -> None:
        """Stops iteration; nothing is deleted."""
        self._closed = True


class GlobusPublisher:
    """ProxyStore's ``MessagePublisher`` over Globus: each message a sealed file sent with
    the objects of ``connector``'s store (the producer's stores must be over the same
    Globus store directory).

    Args:
        connector: The Globus store the producer puts its objects in.
        key_file: The channel's key (default :func:`default_key_file`).
    """

    def __init__(self, connector: GlobusConnector, key_file: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(connector, GlobusConnector):
            raise TypeError(f'a GlobusPublisher needs a ps_globus GlobusConnector, not {type(connector).__name__}')
        self._store_dir = connector.config()['store_dir']
        key = default_key_file() if key_file is None else os.fspath(key_file)
        self._core = _core.MessagePublisher('globus', _options(connector), key)

    def send_message(self, topic: str, message: bytes) -> None:
        """Publishes ``message`` (a ProxyStore event batch) to ``topic``."""
        self._check(message)
        self._core.send(topic, bytes(message))

    def _check(self, message: bytes) -> None:
        # Our own producer's bytes: decoding them runs nothing foreign. An object in
        # another store would not resolve at the consumers, which read this channel's.
        from proxystore.stream.events import EventBatch, NewObjectKeyEvent, bytes_to_event

        batch = bytes_to_event(message)
        events = batch.events if isinstance(batch, EventBatch) else [batch]
        for event in events:
            if not isinstance(event, NewObjectKeyEvent):
                continue
            options = event.store_config.connector.options
            if event.key_type != _KEY_TYPE or options.get('store_dir') != self._store_dir:
                raise InvalidInput(
                    f'a Globus stream announces objects of its own store (store_dir '
                    f'{self._store_dir!r}); this event names {event.key_type} in '
                    f'{options.get("store_dir")!r}',
                    kind='InvalidInput',
                    hint='give the StreamProducer stores over the same GlobusConnector',
                )

    def close(self) -> None:
        """Submits the message files still batching."""
        self._core.close()


class GlobusSubscriber(_Subscriber):
    """ProxyStore's ``MessageSubscriber`` over Globus: one topic's sealed messages at
    this site, in order, each once its file is here and opens under the key.

    Args:
        connector: This site's connector over the producer's Globus store.
        topic: The topic.
        key_file: The channel's key (default :func:`default_key_file`).
        position: The first position to read (0: from the start).
        timeout: Seconds to wait for each message before ``WaitTimeout`` (default: a
            day).
        store_name: The name of the store the consumer resolves objects through (this
            connector; default ``ps-globus-stream:<store_dir>``).
    """

    def __init__(
        self,
        connector: GlobusConnector,
        topic: str,
        *,
        key_file: str | os.PathLike[str] | None = None,
        position: int = 0,
        timeout: float | None = None,
        store_name: str | None = None,
    ) -> None:
        from proxystore.store import Store

        if not isinstance(connector, GlobusConnector):
            raise TypeError(f'a GlobusSubscriber needs a ps_globus GlobusConnector, not {type(connector).__name__}')
        key = default_key_file() if key_file is None else os.fspath(key_file)
        core = _core.MessageSubscriber('globus', _options(connector), topic, key, position)
        super().__init__(core, timeout)
        name = store_name or f'ps-globus-stream:{connector.config()["store_dir"]}'
        self._store_config = Store(name, connector, register=False).config()

    def next_message(self) -> bytes:
        """The next genuine message, with each event's store replaced by this
        subscriber's own."""
        from proxystore.stream.events import (
            EventBatch,
            NewObjectKeyEvent,
            bytes_to_event,
            event_to_bytes,
        )

        batch = bytes_to_event(self._next_raw())
        events = batch.events if isinstance(batch, EventBatch) else [batch]
        for event in events:
            if isinstance(event, NewObjectKeyEvent):
                if event.key_type != _KEY_TYPE:
                    raise InvalidInput(
                        f'a sealed event names key type {event.key_type!r}: not taken',
                        kind='InvalidInput',
                    )
                event.store_config = self._store_config
        return event_to_bytes(batch)


class RedisStreamPublisher:
    """ProxyStore's ``MessagePublisher`` over a Redis stream per topic (replayable).

    Args:
        connector: The Redis server (a ps_globus ``RedisConnector``; its prefix names
            the streams, ``<prefix>messages:<topic>``).
        key_file: Seal messages with this key; ``None``: unsealed, and whoever can write
            to the server can run code in the consumers.
    """

    def __init__(self, connector: RedisConnector, key_file: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(connector, RedisConnector):
            raise TypeError(f'a RedisStreamPublisher needs a ps_globus RedisConnector, not {type(connector).__name__}')
        key = None if key_file is None else os.fspath(key_file)
        self._core = _core.MessagePublisher('redis', _options(connector), key)

    def send_message(self, topic: str, message: bytes) -> None:
        """Appends ``message`` to ``topic``'s stream."""
        self._core.send(topic, bytes(message))

    def close(self) -> None:
        """Nothing to submit; the stream stays."""
        self._core.close()


class RedisStreamSubscriber(_Subscriber):
    """ProxyStore's ``MessageSubscriber`` over a Redis stream: one topic's messages, in
    order, from ``position`` (0: every message ever published, even before this
    subscriber started).

    Args:
        connector: The Redis server.
        topic: The topic.
        key_file: The key messages are sealed with (``None``: unsealed).
        position: The first position to read.
        timeout: Seconds to wait for each message before ``WaitTimeout`` (default: a
            day).
    """

    def __init__(
        self,
        connector: RedisConnector,
        topic: str,
        *,
        key_file: str | os.PathLike[str] | None = None,
        position: int = 0,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(connector, RedisConnector):
            raise TypeError(f'a RedisStreamSubscriber needs a ps_globus RedisConnector, not {type(connector).__name__}')
        key = None if key_file is None else os.fspath(key_file)
        super().__init__(
            _core.MessageSubscriber('redis', _options(connector), topic, key, position), timeout
        )


class Producer:
    """A topic's producer without ProxyStore's classes in sight: ``send`` values, then
    ``close`` (or leave the ``with`` block) to end the stream.

    Args:
        connector: A ``GlobusConnector`` (the channel is Globus itself) or a
            ``RedisConnector`` (a Redis stream); objects go to its store.
        topic: The topic.
        key_file: The channel's key (Globus: default :func:`default_key_file`; Redis:
            ``None`` is unsealed).
        batch_size: Values per event (ProxyStore's ``batch_size``).
    """

    def __init__(
        self,
        connector: GlobusConnector | RedisConnector,
        topic: str,
        *,
        key_file: str | os.PathLike[str] | None = None,
        batch_size: int = 1,
    ) -> None:
        from proxystore.store import Store
        from proxystore.stream import StreamProducer

        publisher: GlobusPublisher | RedisStreamPublisher
        if isinstance(connector, GlobusConnector):
            publisher = GlobusPublisher(connector, key_file)
        else:
            publisher = RedisStreamPublisher(connector, key_file)
        self.topic = topic
        self._store = Store(f'ps-globus-stream-producer:{topic}', connector, register=False)
        self._producer = StreamProducer(
            publisher, stores={topic: self._store}, batch_size=batch_size
        )

    def send(self, value: Any, *, metadata: dict[str, Any] | None = None) -> None:
        """Stores ``value`` and publishes its event."""
        self._producer.send(self.topic, value, evict=False, metadata=metadata)

    def close(self) -> None:
        """Ends the stream (consumers' iteration ends) and submits what is batching."""
        self._producer.close(topics=[self.topic])
        self._store.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer:
    """A topic's values in order, until its end, without ProxyStore's classes in sight.

    Args:
        connector: This site's ``GlobusConnector`` over the producer's store, or the
            ``RedisConnector`` of the producer's server.
        topic: The topic.
        key_file: As the producer's.
        position: The first position to read (0: from the start).
        timeout: Seconds to wait for each event (default: a day).
    """

    def __init__(
        self,
        connector: GlobusConnector | RedisConnector,
        topic: str,
        *,
        key_file: str | os.PathLike[str] | None = None,
        position: int = 0,
        timeout: float | None = None,
    ) -> None:
        from proxystore.stream import StreamConsumer

        self.subscriber: _Subscriber
        if isinstance(connector, GlobusConnector):
            self.subscriber = GlobusSubscriber(
                connector, topic, key_file=key_file, position=position, timeout=timeout
            )
        else:
            self.subscriber = RedisStreamSubscriber(
                connector, topic, key_file=key_file, position=position, timeout=timeout
            )
        self._consumer = StreamConsumer(self.subscriber)

    def __iter__(self) -> Iterator[Any]:
        return self._consumer.iter_objects()

    def with_metadata(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """``(metadata, value)`` pairs, in order."""
        return self._consumer.iter_objects_with_metadata()

    @property
    def rejected(self) -> int:
        """How many messages were dropped because they did not open under the key."""
        return self.subscriber.rejected

    def close(self) -> None:
        """Stops reading."""
        self._consumer.close()


__all__ = [
    'Consumer',
    'GlobusPublisher',
    'GlobusSubscriber',
    'Producer',
    'RedisStreamPublisher',
    'RedisStreamSubscriber',
    'create_key_file',
    'default_key_file',
]

"""asyncio: awaitable put, get, resolve and prefetch for stores on ps_globus connectors.

Every wait runs on ps-globus's own runtime, never on the event loop's thread: while a
transfer is on its way, the loop serves other tasks. Cancelling the awaiting task
cancels the wait (what was committed stays committed: a put's transfer still happens).
It works in a process forked after ps_globus started (multiprocessing, a process pool):
the library's runtime is rebuilt there::

    import ps_globus.aio as aio

    key = await aio.put(store, array)
    value = await aio.get(store, key)
    value = await aio.resolve(proxy)       # a proxy, or a proxy of a future (polled)
    await aio.prefetch(proxies)            # one batched wait per store

Serializing and deserializing run on the loop's thread (they are CPU work, not waits).
A proxy of a store on another connector is resolved in a worker thread
(``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from ps_globus.proxystore import (
    PsGlobusKey,
    RustConnector,
    _as_bytes,
    _batchable,
    _key_text,
    _store_connector,
)

_MISSING = object()


def _ours(store: Any) -> RustConnector:
    return _store_connector(store, 'ps_globus.aio')


async def put(store: Any, obj: Any, *, serializer: Any = None) -> PsGlobusKey:
    """Serializes ``obj`` with the store's serializer (or ``serializer``) and stores it;
    its key."""
    data = (serializer or store.serializer)(obj)
    return PsGlobusKey(await _ours(store)._core.put_async(_as_bytes(data)))


async def get(store: Any, key: PsGlobusKey, *, deserializer: Any = None, default: Any = None) -> Any:
    """The object of ``key`` (waiting for its transfer), deserialized; ``default`` if it
    does not exist. Uses and fills the store's cache, as ``Store.get`` does."""
    found = await _get(store, key, deserializer)
    return default if found is _MISSING else found


async def _get(store: Any, key: PsGlobusKey, deserializer: Any) -> Any:
    if store.cache.exists(key):
        return store.cache.get(key)
    data = await _ours(store)._core.get_async(_key_text(key))
    if data is None:
        return _MISSING
    obj = (deserializer or store.deserializer)(data)
    store.cache.set(key, obj)
    return obj


async def resolve(proxy: Any) -> Any:
    """The object behind ``proxy``, without blocking the loop; the proxy is resolved too
    (later uses do not wait). A proxy of a future (``Store.future().proxy()``) is polled
    with its own interval, backoff and ``polling_timeout``."""
    from proxystore.proxy import extract, is_resolved
    from proxystore.store.exceptions import ProxyResolveMissingKeyError
    from proxystore.store.factory import PollingStoreFactory, StoreFactory

    if is_resolved(proxy):
        return extract(proxy)
    factory = object.__getattribute__(proxy, '__proxy_factory__')
    store = factory.get_store() if isinstance(factory, StoreFactory) else None
    if store is None or not isinstance(store.connector, RustConnector):
        return await asyncio.to_thread(extract, proxy)
    obj = await _get(store, factory.key, factory.deserializer)
    if obj is _MISSING and isinstance(factory, PollingStoreFactory):
        obj = await _poll(store, factory)
    if obj is _MISSING:
        raise ProxyResolveMissingKeyError(factory.key, type(store), store.name)
    proxy.__proxy_wrapped__ = obj
    if factory.evict:
        await _evict(store, factory.key)
    return obj


async def _evict(store: Any, key: PsGlobusKey) -> None:
    await _ours(store)._core.evict_async(_key_text(key))
    store.cache.evict(key)


async def _poll(store: Any, factory: Any) -> Any:
    # ProxyStore's own polling, with asyncio's sleep: the loop runs meanwhile.
    interval = factory._polling_interval
    timeout = factory._polling_timeout
    started = time.monotonic()
    while True:
        obj = await _get(store, factory.key, factory.deserializer)
        if obj is not _MISSING:
            return obj
        if timeout is not None and time.monotonic() - started >= timeout:
            return _MISSING
        await asyncio.sleep(interval)
        interval *= factory._polling_backoff_factor
        if factory._polling_interval_limit is not None:
            interval = min(interval, factory._polling_interval_limit)


async def prefetch(proxies: Iterable[Any]) -> None:
    """Resolves many proxies: those of each ps_globus store with one batched wait, the
    others concurrently in worker threads."""
    groups, others = _batchable(proxies)

    async def group(store: Any, members: list[tuple[Any, Any]]) -> None:
        from proxystore.store.exceptions import ProxyResolveMissingKeyError

        keys = [_key_text(f.key) for _, f in members]
        values = await _ours(store)._core.get_batch_async(keys)
        for (proxy, factory), data in zip(members, values):
            if data is None:
                raise ProxyResolveMissingKeyError(factory.key, type(store), store.name)
            obj = (factory.deserializer or store.deserializer)(data)
            proxy.__proxy_wrapped__ = obj
            if factory.evict:
                await _evict(store, factory.key)
            else:
                store.cache.set(factory.key, obj)

    await asyncio.gather(
        *(group(store, members) for store, members in groups),
        *(resolve(proxy) for proxy in others),
    )


__all__ = ['get', 'prefetch', 'put', 'resolve']

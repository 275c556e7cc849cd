"""Leases kept in the state database: a group of a store's objects evicted when the lease
expires, by whichever process of that database sees it first -- also after the process
that made it is gone.

ProxyStore's ``LeaseLifetime`` keeps its timer in the process that made it: if that
process ends first (a crash, a batch job's wall time), its objects stay for ever. A
:func:`lease` is a row in the state database (SQLite in ``$PS_GLOBUS_HOME``, or the
facility's PostgreSQL), so any process of that database evicts it at expiry, and
``ps-globus lease list|reap|end`` sees it::

    lease = ps_globus.lease(store, ttl=3600)
    proxy = lease.proxy(array)            # evicted an hour from now, wherever
    lease.extend(600)
    lease.end()                           # or let it expire
"""

from __future__ import annotations

import json
from typing import Any

from ps_globus import _core
from ps_globus.proxystore import PsGlobusKey, RustConnector, _store_connector


def _connector(store: Any) -> RustConnector:
    return _store_connector(store, "a ps_globus lease (ProxyStore's LeaseLifetime serves other stores)")


class Lease:
    """A lease of the objects of a ProxyStore ``Store`` over a ps_globus connector (see
    :func:`lease`). Objects join it by :meth:`proxy`, :meth:`put` or :meth:`attach`."""

    def __init__(self, store: Any, core: Any) -> None:
        self.store = store
        self._core = core

    @property
    def id(self) -> str:
        """The lease's id, as ``ps-globus lease list`` shows it."""
        return self._core.id

    def expires_at(self) -> float:
        """When it expires, as Unix seconds; :class:`~ps_globus.errors.LeaseEnded` once
        it is over."""
        return self._core.expires_at()

    def extend(self, seconds: float) -> float:
        """Moves the expiry ``seconds`` later; the new expiry. A lease that is over
        cannot be revived (:class:`~ps_globus.errors.LeaseEnded`)."""
        return self._core.extend(seconds)

    def attach(self, key: PsGlobusKey) -> None:
        """Makes the store's object ``key`` part of the lease."""
        self._core.attach(key.key if isinstance(key, PsGlobusKey) else key[0])

    def put(self, obj: Any, **options: Any) -> PsGlobusKey:
        """Stores ``obj`` through the store (``options`` are ``Store.put``'s) as part of
        the lease; its key. If the lease is over, the object is evicted again and
        :class:`~ps_globus.errors.LeaseEnded` raised."""
        self.expires_at()  # refuse early: nothing is written for a lease that is over
        key = self.store.put(obj, **options)
        try:
            self.attach(key)
        except BaseException:
            self.store.evict(key)
            raise
        return key

    def proxy(self, obj: Any, **options: Any) -> Any:
        """Stores ``obj`` as part of the lease; a plain proxy of it (``options`` are
        ``Store.proxy_from_key``'s, e.g. ``evict``)."""
        return self.store.proxy_from_key(self.put(obj), **options)

    def end(self) -> None:
        """Ends the lease now: evicts its objects."""
        self._core.end()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def __repr__(self) -> str:
        return f'Lease({self.id!r}, store={self.store.name!r})'


def lease(store: Any, ttl: float) -> Lease:
    """A new lease of ``store``'s objects, expiring ``ttl`` seconds from now."""
    return Lease(store, _core.Lease(_connector(store)._core, store.name, ttl_s=ttl))


def open_lease(store: Any, lease_id: str) -> Lease:
    """The live lease ``lease_id`` of ``store`` (another process made it; this one extends
    or ends it, or adds objects). :class:`~ps_globus.errors.LeaseEnded` if it is over;
    :class:`~ps_globus.errors.InvalidInput` if it holds another store's objects."""
    return Lease(store, _core.Lease(_connector(store)._core, store.name, lease_id=lease_id))


def reap_expired_leases() -> list[dict[str, Any]]:
    """Evicts the objects of every expired lease of the state database (``ps-globus
    lease reap``): one report per lease (``id``, ``evicted``, ``left``, ``why``,
    ``forgotten``)."""
    return [json.loads(r) for r in _core.reap_expired_leases()]


__all__ = ['Lease', 'lease', 'open_lease', 'reap_expired_leases']

"""ProxyStore connectors backed by ps-globus's Rust engine.

The classes here satisfy ProxyStore 1.1's ``Connector`` protocol, so they plug into
``proxystore.store.Store`` unchanged, and with it into ProxyStore's proxies, Parsl's
``ProxyStoreSerializer`` and Globus Compute's pickling::

    from proxystore.store import Store
    from ps_globus.proxystore import GlobusConnector

    store = Store('run', GlobusConnector('my-run'))   # sites from `ps-globus site add`
    proxy = store.proxy(array)                         # one Globus task per batch, not per put

A worker that receives the proxy rebuilds the store with ``GlobusConnector(**config)``
(ProxyStore's rule): ``config()`` therefore returns exactly the constructor's keyword
arguments, with the sites resolved, so the rebuilt connector works at any site. Which site
a process is at comes from ``PS_GLOBUS_SITE`` or the sites' host regexes, in that process.

Keys are :class:`PsGlobusKey` tuples holding the library's compact key JSON: picklable,
hashable and equal across processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from ps_globus import _core


class PsGlobusKey(NamedTuple):
    """The key of one object stored through a ps_globus connector."""

    key: str
    """The library's key as compact JSON (kind, id and, for Globus, where and what)."""

    @property
    def kind(self) -> str:
        """The kind of connector that made it (``globus``, ``file``, ...)."""
        return json.loads(self.key)['kind']

    @property
    def id(self) -> str:
        """The object id."""
        return json.loads(self.key)['id']


def _as_bytes(obj: Any) -> bytes:
    # BytesLike: bytes, bytearray, memoryview (or any buffer on 3.12+).
    return obj if isinstance(obj, bytes) else bytes(obj)


def _key_text(key: Any) -> str:
    if isinstance(key, PsGlobusKey):
        return key.key
    if isinstance(key, tuple) and len(key) == 1 and isinstance(key[0], str):
        return key[0]
    raise TypeError(f'not a ps_globus key: {key!r}')


def _without_none(value: Any) -> Any:
    # ProxyStore writes store configs as TOML, which has no null.
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class RustConnector:
    """Base of the connectors backed by a Rust connector of kind ``kind``.

    Subclasses define the constructor and call :meth:`_start` with the Rust connector's
    options and the constructor's keyword arguments (what :meth:`config` returns).
    """

    kind: ClassVar[str]

    _core: _core.Connector
    _config: dict[str, Any] = {}

    def _start(self, options: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        self._core = _core.Connector(self.kind, json.dumps(options))
        self._config = _without_none(dict(config))

    def __repr__(self) -> str:
        return f'{type(self).__name__}({", ".join(f"{k}={v!r}" for k, v in self._config.items())})'

    # The ProxyStore Connector protocol.

    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments: ``type(self)(**self.config())`` rebuilds
        an equivalent connector in any process."""
        return json.loads(json.dumps(self._config))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RustConnector:
        """Rebuilds a connector from :meth:`config`."""
        return cls(**config)

    def put(self, obj: Any) -> PsGlobusKey:
        """Stores ``obj`` (bytes-like); returns its key."""
        return PsGlobusKey(self._core.put(_as_bytes(obj)))

    def put_batch(self, objs: Sequence[Any]) -> list[PsGlobusKey]:
        """Stores every object together; keys in order."""
        return [PsGlobusKey(k) for k in self._core.put_batch([_as_bytes(o) for o in objs])]

    def get(self, key: PsGlobusKey) -> bytes | None:
        """The object's bytes (waiting for them to arrive here), or ``None`` if gone."""
        return self._core.get(_key_text(key))

    def get_batch(self, keys: Sequence[PsGlobusKey]) -> list[bytes | None]:
        """Many objects, waited for together; in order."""
        return self._core.get_batch([_key_text(k) for k in keys])

    def exists(self, key: PsGlobusKey) -> bool:
        """Whether the object is here now (no wait, no Globus request)."""
        return self._core.exists(_key_text(key))

    def evict(self, key: PsGlobusKey) -> None:
        """Removes the object; removing a missing one succeeds."""
        self._core.evict(_key_text(key))

    def close(self) -> None:
        """Submits what is held back for batching. Never deletes data; idempotent."""
        self._core.close()

    # What ProxyStore lacks.

    def put_file(self, path: str | os.PathLike[str]) -> PsGlobusKey:
        """Stores the file at ``path`` as an object (staged without reading it into
        memory where the connector keeps files)."""
        return PsGlobusKey(self._core.put_file(os.fspath(path)))

    def resolve_path(self, key: PsGlobusKey) -> str:
        """The verified local file holding the object at this site, waiting for it."""
        return self._core.resolve_path(_key_text(key))

    def store_config(self, name: str) -> dict[str, Any]:
        """A ps-globus store configuration naming this connector (named references use
        it)."""
        return {
            'v': 1,
            'name': name,
            'connector': {'kind': self.kind, 'options': json.loads(self._core.config_json())},
        }


class DeferrableRustConnector(RustConnector):
    """A connector whose keys may be made before their objects: ProxyStore's
    ``DeferrableConnector`` protocol, so ``Store.future()`` works on it.

    ``set`` writes the object with a small self-verifying manifest (its size and
    sha256), so a reader that finds bytes not matching it raises
    :class:`~ps_globus.errors.IntegrityError`, never returns them; a key is set once,
    and a second ``set`` (a retried task, a copy of a pickled future) raises
    :class:`~ps_globus.errors.AlreadySet` and changes nothing. ``get`` of a key not yet
    set returns ``None`` at once, so ProxyStore's own polling (``polling_timeout``)
    decides how long a reader waits.
    """

    def _new_key_options(self) -> dict[str, Any]:
        return {}

    def new_key(self, obj: Any = None) -> PsGlobusKey:
        """A key whose object :meth:`set` writes later, perhaps in another process.
        ``obj`` is accepted for ProxyStore's protocol and not used: the object is
        whatever ``set`` writes."""
        del obj
        return PsGlobusKey(self._core.new_key(**self._new_key_options()))

    def set(self, key: PsGlobusKey, obj: Any) -> None:
        """Writes the object of a key from :meth:`new_key`, once."""
        self._core.set(_key_text(key), _as_bytes(obj))

    def abandon(self, key: PsGlobusKey, reason: str) -> None:
        """Records that the object of a key from :meth:`new_key` will never be
        written: its readers raise :class:`~ps_globus.errors.ProducerGone` with
        ``reason`` instead of waiting. (ProxyStore's ``Future`` has no way to say this;
        :func:`ps_globus.future` does.)"""
        self._core.abandon(_key_text(key), reason)


class FileConnector(DeferrableRustConnector):
    """Objects as files in ``store_dir`` (a shared file system), written atomically and
    durably."""

    kind = 'file'

    def __init__(self, store_dir: str) -> None:
        store_dir = os.path.abspath(store_dir)
        self._start({'dir': store_dir}, {'store_dir': store_dir})


class GlobusConnector(DeferrableRustConnector):
    """Objects moved between sites by Globus: small ones by one HTTPS PUT to each
    destination collection that serves HTTPS, the rest by Transfer, batched into few
    tasks.

    Args:
        store_dir: The store's directory under every site's local path (relative,
            non-empty, no ``..``).
        sites: ``{name: {"collection": UUID, "collection_path": ..., "local_path": ...,
            "host_regex": ...}}``; ``None`` takes them from the configuration file the
            CLI uses (``$PS_GLOBUS_CONFIG``, ``ps-globus site add``).
        destinations: Where puts are sent (default every site but the current one).
        pull_on_demand: At a site that is not a destination, fetch an object on first
            read.
        wait_timeout_s: Longest wait for a transfer (default: the task's deadline).
        transfer_url: The Transfer service (default ``PS_GLOBUS_TRANSFER_URL``, else
            Globus).
        https_max_size: Objects up to this many bytes go by HTTPS where the destination
            serves it (default 4 MiB; a site's own ``https_max_size`` is a ceiling too;
            ``0``: always Transfer). A login without the collection's HTTPS consent
            makes ``put`` raise ``ConsentRequired`` naming the scope.
        latency_max_size: Objects of at least this many bytes are bulk work, whose
            Globus tasks leave a running slot to the small objects readers wait on
            (default 16 MiB).
        settling_site: The one site whose processes may set the futures this
            connector makes (``Store.future()``; default: the site where each future
            is made), so two sites never both set one.
    """

    kind = 'globus'

    def __init__(
        self,
        store_dir: str,
        sites: Mapping[str, Mapping[str, Any]] | None = None,
        destinations: Sequence[str] | None = None,
        pull_on_demand: bool = False,
        wait_timeout_s: int | None = None,
        transfer_url: str | None = None,
        https_max_size: int | None = None,
        settling_site: str | None = None,
        latency_max_size: int | None = None,
    ) -> None:
        if sites is None:
            sites = json.loads(_core.config_sites_json())
        options = {
            'store_dir': store_dir,
            'sites': {name: dict(site) for name, site in sites.items()},
            'destinations': list(destinations) if destinations is not None else None,
            'pull_on_demand': pull_on_demand,
            'wait_timeout_s': wait_timeout_s,
            'transfer_url': transfer_url,
            'https_max_size': https_max_size,
            'latency_max_size': latency_max_size,
        }
        self._start(_without_none(options), {**options, 'settling_site': settling_site})
        # The config carries the sites as the library read them (uuids normalised),
        # so the rebuilt connector means the same collections anywhere.
        self._config['sites'] = json.loads(self._core.config_json())['sites']
        if settling_site is not None and settling_site not in self._config['sites']:
            raise ValueError(
                f'settling_site {settling_site!r} is not one of the sites '
                f'{sorted(self._config["sites"])}'
            )
        self._settling_site = settling_site

    def _new_key_options(self) -> dict[str, Any]:
        return {'settling_site': self._settling_site}

    @property
    def site(self) -> str:
        """The site this process acts as."""
        return self._core.site

    @classmethod
    def from_proxystore_endpoints(
        cls,
        endpoints: Any,
        store_dir: str,
        **kwargs: Any,
    ) -> GlobusConnector:
        """A connector over the collections of a ProxyStore ``GlobusEndpoints`` (or a
        list of ``GlobusEndpoint``, or its config dict); see :func:`sites_from_proxystore`.
        Never share ``store_dir`` with a ProxyStore connector made with ``clear=True``:
        its ``close()`` deletes the directory."""
        return cls(store_dir, sites=sites_from_proxystore(endpoints), **kwargs)


class EndpointConnector(RustConnector):
    """Objects in endpoints (``ps-globus endpoint start``, or ProxyStore's own layout):
    ProxyStore's ``EndpointConnector(endpoints, proxystore_dir)`` arguments, on the Rust
    connector.

    Each process finds its home endpoint among ``endpoints`` in its own endpoint
    directory (``PROXYSTORE_HOME``, or ``proxystore_dir`` where this process constructs
    the connector); a proxy rebuilt elsewhere uses that process's own directory, never
    one the proxy names. A key names the endpoint that holds the object, and the home
    endpoint fetches it from there. Where ProxyStore's client aborts on the first
    endpoint that refuses a connection, this one tries the next; a peer that cannot be
    reached is a :class:`ps_globus.errors.ServiceError` naming it, after the
    endpoint's deadline, never a hang.
    """

    kind = 'endpoint'

    def __init__(
        self,
        endpoints: Sequence[Any],
        proxystore_dir: str | os.PathLike[str] | None = None,
        *,
        timeout_ms: int | None = None,
    ) -> None:
        ids = [str(e) for e in endpoints]
        directory = None if proxystore_dir is None else os.path.abspath(os.fspath(proxystore_dir))
        self._start(
            _without_none(
                {'endpoints': ids, 'proxystore_dir': directory, 'timeout_ms': timeout_ms}
            ),
            {'endpoints': ids, 'proxystore_dir': directory, 'timeout_ms': timeout_ms},
        )


class RedisConnector(DeferrableRustConnector):
    """Objects as values on a Redis server every process using them reaches.

    ProxyStore's ``RedisConnector(hostname, port, clear)`` arguments work as they are,
    with one difference: ``clear`` removes only this connector's objects (keys of the form
    ``prefix`` + 32 hex digits), where ProxyStore's runs ``FLUSHDB``. Keys live under
    ``prefix`` (``ps-globus:`` by default; ``''`` for ProxyStore's bare layout).

    Args:
        hostname, port: The server (default ``127.0.0.1:6379``).
        clear: Call :meth:`clear` when the connector is closed.
        socket: A Unix socket to use instead.
        db: The database number.
        tls, tls_ca_file: TLS, checked against the system's roots or this CA file.
        username: The Redis ACL user.
        password_env: The environment variable that holds the password in each process
            (the password itself never enters a config or a proxy).
        prefix: Prepended to every object id.
        ttl_s: Objects expire this many seconds after their put.
        timeout_ms: How long one command may take.
    """

    kind = 'redis'

    def __init__(
        self,
        hostname: str = '127.0.0.1',
        port: int = 6379,
        clear: bool = False,
        *,
        socket: str | None = None,
        db: int = 0,
        tls: bool = False,
        tls_ca_file: str | None = None,
        username: str | None = None,
        password_env: str | None = None,
        prefix: str | None = None,
        ttl_s: int | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        settings = {
            'socket': socket,
            'db': db,
            'tls': tls,
            'tls_ca_file': tls_ca_file,
            'username': username,
            'password_env': password_env,
            'prefix': prefix,
            'ttl_s': ttl_s,
            'timeout_ms': timeout_ms,
        }
        self._clear_on_close = clear
        self._start(
            _without_none({'host': hostname, 'port': port, **settings}),
            {'hostname': hostname, 'port': port, 'clear': clear, **settings},
        )

    def clear(self) -> int:
        """Removes this connector's objects from the database, and nothing else; returns
        how many."""
        return self._core.clear()

    def close(self, clear: bool | None = None) -> None:
        """Closes; with ``clear`` (default: the constructor's), clears first."""
        if self._clear_on_close if clear is None else clear:
            self.clear()
        super().close()


class MultiConnector(DeferrableRustConnector):
    """Several ps-globus connectors behind one; each put goes to the highest-priority
    child whose policy accepts its size, tags and site (Redis for small objects, Globus
    for large ones, say).

    Args:
        children: ``{name: (connector, policy)}``, in priority-tie order, where
            ``connector`` is one of this module's connectors and ``policy`` a dict of
            ``priority``, ``min_size``, ``max_size`` (inclusive), ``tags_required``,
            ``tags_allowed`` and ``sites``; or ``{name: {"kind", "options", "policy"}}``
            (what :meth:`config` returns).

        future_tags: The tags of the futures it makes (``Store.future()``): a future's
            size is unknown until it is set, so a multi connector makes futures only
            where its policies send every size to one child -- by these tags, say, and
            a child whose policy requires one.

    ``store.proxy(obj, tags=[...])`` passes tags through ProxyStore's ``Store`` to
    :meth:`put`. A batch goes to each child as one batch.
    """

    kind = 'multi'

    def __init__(self, children: Mapping[str, Any], future_tags: Sequence[str] = ()) -> None:
        described: dict[str, dict[str, Any]] = {}
        for name, child in children.items():
            if isinstance(child, Mapping):
                described[name] = {
                    'kind': child['kind'],
                    'options': dict(child['options']),
                    'policy': dict(child.get('policy') or {}),
                }
                continue
            connector, policy = child
            if not isinstance(connector, RustConnector):
                raise TypeError(
                    f'child {name!r} is a {type(connector).__name__}: a MultiConnector '
                    'takes ps_globus connectors (RedisConnector, FileConnector, '
                    'GlobusConnector)'
                )
            described[name] = {
                'kind': connector.kind,
                'options': json.loads(connector._core.config_json()),
                'policy': dict(policy or {}),
            }
        described = _without_none(described)
        options = {
            'children': [
                {
                    'name': name,
                    'connector': {'kind': c['kind'], 'options': c['options']},
                    'policy': c['policy'],
                }
                for name, c in described.items()
            ]
        }
        self._future_tags = list(future_tags)
        config: dict[str, Any] = {'children': described}
        if self._future_tags:
            config['future_tags'] = self._future_tags
        self._start(options, config)

    def _new_key_options(self) -> dict[str, Any]:
        return {'tags': self._future_tags}

    def put(self, obj: Any, tags: Iterable[str] = ()) -> PsGlobusKey:
        """Stores ``obj`` in the child its size, ``tags`` and this site choose."""
        return PsGlobusKey(self._core.put(_as_bytes(obj), list(tags)))

    def put_batch(self, objs: Sequence[Any], tags: Iterable[str] = ()) -> list[PsGlobusKey]:
        """Stores every object, one batch per child; keys in order."""
        keys = self._core.put_batch([_as_bytes(o) for o in objs], list(tags))
        return [PsGlobusKey(k) for k in keys]

    @staticmethod
    def child_of(key: PsGlobusKey) -> str | None:
        """The name of the child holding the object ``key`` names."""
        meta = json.loads(_key_text(key)).get('meta') or {}
        return meta.get('child')


def sites_from_proxystore(endpoints: Any) -> dict[str, dict[str, str]]:
    """ps-globus sites from a ProxyStore Globus endpoint configuration.

    Accepts a ``GlobusEndpoints``, an iterable of ``GlobusEndpoint``, or the dict form
    ``{uuid: {"endpoint_path", "local_path", "host_regex"}}``. Each collection becomes a
    site named by its UUID; ``endpoint_path`` becomes the collection path. ProxyStore
    matches ``host_regex`` against the whole host name (``re.fullmatch``), so it is
    anchored here (ps-globus searches).
    """
    if isinstance(endpoints, Mapping):
        entries = [
            (uuid, e['endpoint_path'], e['local_path'], e['host_regex'])
            for uuid, e in endpoints.items()
        ]
    else:
        # A GlobusEndpoints iterates over its GlobusEndpoint values.
        entries = [(e.uuid, e.endpoint_path, e.local_path, e.host_regex) for e in endpoints]
    sites: dict[str, dict[str, str]] = {}
    for uuid, endpoint_path, local_path, host_regex in entries:
        regex = host_regex if isinstance(host_regex, str) else host_regex.pattern
        sites[str(uuid)] = {
            'collection': str(uuid),
            'collection_path': endpoint_path,
            'local_path': local_path,
            'host_regex': f'^(?:{regex})$',
        }
    if len(sites) < 2:
        raise ValueError('a Globus store needs at least two endpoints')
    return sites


def _batchable(proxies: Iterable[Any]) -> tuple[list[tuple[Any, list[tuple[Any, Any]]]], list[Any]]:
    """The unresolved proxies of stores on a ps_globus connector, by store (``(store,
    [(proxy, factory)])``), and the others: proxies of other stores, and of futures
    (their polling is their own)."""
    from proxystore.proxy import is_resolved
    from proxystore.store.factory import PollingStoreFactory, StoreFactory

    groups: dict[int, tuple[Any, list[tuple[Any, Any]]]] = {}
    others = []
    for proxy in proxies:
        if is_resolved(proxy):
            continue
        factory = object.__getattribute__(proxy, '__proxy_factory__')
        store = factory.get_store() if isinstance(factory, StoreFactory) else None
        batchable = (
            store is not None
            and isinstance(store.connector, RustConnector)
            and not isinstance(factory, PollingStoreFactory)
        )
        if batchable:
            groups.setdefault(id(store), (store, []))[1].append((proxy, factory))
        else:
            others.append(proxy)
    return list(groups.values()), others


def _store_connector(store: Any, what: str) -> RustConnector:
    """``store``'s connector, which ``what`` needs to be a ps_globus one."""
    connector = store.connector
    if not isinstance(connector, RustConnector):
        raise TypeError(
            f'{what} needs a store on a ps_globus connector, not {type(connector).__name__}'
        )
    return connector


def prefetch(proxies: Iterable[Any]) -> None:
    """Resolves many proxies with one batched wait.

    Proxies of stores on a ps_globus connector are fetched together
    (``connector.get_batch``: every transfer waited for at once, outside the store's
    lock); any other proxy is resolved as usual. Proxies already resolved are left alone.
    A proxy made with ``evict=True`` evicts its object, as resolving it would.
    """
    from proxystore.proxy import resolve
    from proxystore.store.exceptions import ProxyResolveMissingKeyError

    groups, others = _batchable(proxies)
    for store, members in groups:
        values = store.connector.get_batch([factory.key for _, factory in members])
        for (proxy, factory), data in zip(members, values):
            if data is None:
                raise ProxyResolveMissingKeyError(factory.key, type(store), store.name)
            deserializer = factory.deserializer or store.deserializer
            proxy.__proxy_wrapped__ = deserializer(data)
            if factory.evict:
                store.evict(factory.key)
    for proxy in others:
        resolve(proxy)


__all__ = [
    'DeferrableRustConnector',
    'EndpointConnector',
    'FileConnector',
    'GlobusConnector',
    'MultiConnector',
    'PsGlobusKey',
    'RedisConnector',
    'RustConnector',
    'prefetch',
    'sites_from_proxystore',
]

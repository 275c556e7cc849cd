"""ProxyStore's own ``Store.future()`` on our connectors (file, Redis, multi, Globus across
two sites), settled once and verified; and ``ps_globus.future``, which can say that no
value is coming."""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from proxystore.connectors.protocols import DeferrableConnector
from proxystore.store import Store
from proxystore.store.exceptions import ProxyResolveMissingKeyError

import ps_globus
from conftest import CHILD_LIMIT_S, RedisServer, last_line, run_at, start
from ps_globus.errors import AlreadySet, IntegrityError, ProducerGone, Unsupported
from ps_globus.proxystore import (
    EndpointConnector,
    FileConnector,
    GlobusConnector,
    MultiConnector,
    RedisConnector,
)
from ps_globus.testing import Emulator

#: A consumer in another process: says it is waiting (the future not done yet), then
#: resolves the pickled proxy from stdin and prints what it got.
CONSUMER = """
import pickle, sys
from proxystore.proxy import extract
future, proxy = pickle.loads(sys.stdin.buffer.read())
assert not future.done()
print('waiting', flush=True)
try:
    print(repr(extract(proxy)), flush=True)
except Exception as e:
    cause = e.__cause__ or e
    print(type(cause).__name__, getattr(cause, 'reason', cause), flush=True)
"""


def file_store(tmp_path: Path) -> FileConnector:
    return FileConnector(str(tmp_path / 'futures'))


def redis_store(redis: RedisServer) -> RedisConnector:
    return RedisConnector('127.0.0.1', redis.port)


def multi_store(redis: RedisServer, tmp_path: Path) -> MultiConnector:
    # Small objects to Redis, large ones to files, futures (tag 'future') to files.
    small = RedisConnector('127.0.0.1', redis.port)
    files = FileConnector(str(tmp_path / 'multi-files'))
    return MultiConnector(
        {
            'small': (small, {'max_size': 1000, 'priority': 1}),
            'large': (files, {}),
            'futures': (files, {'tags_required': ['future'], 'priority': 9}),
        },
        future_tags=['future'],
    )


CONNECTORS: dict[str, Callable[[RedisServer, Path], object]] = {
    'file': lambda redis, tmp: file_store(tmp),
    'redis': lambda redis, tmp: redis_store(redis),
    'multi': multi_store,
}


@pytest.mark.parametrize('kind', list(CONNECTORS))
def test_store_future_works_unchanged_and_a_consumer_in_another_process_waits_for_set(
    kind: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    connector = CONNECTORS[kind](redis_server, tmp_path)
    assert isinstance(connector, DeferrableConnector)
    store = Store(f'fut-{kind}', connector, register=True)
    future = store.future(polling_interval=0.01, polling_timeout=CHILD_LIMIT_S)
    if kind == 'multi':
        assert MultiConnector.child_of(future._factory.key) == 'futures'
    consumer = start(CONSUMER, pickle.dumps((future, future.proxy())))
    value = {'big': 'x' * 5000, 'n': 7}
    future.set_result(value)
    assert last_line(consumer) == repr(value)
    assert future.done() and future.result() == value
    # Set once: a second set (here, from a pickled copy) changes nothing.
    copy = pickle.loads(pickle.dumps(future))
    with pytest.raises(AlreadySet):
        copy.set_result({'other': True})
    fresh = Store(f'fut-{kind}-reader', type(connector).from_config(connector.config()))
    assert fresh.get(future._factory.key) == value
    store.close()


def test_a_second_set_in_another_process_raises_already_set_there(
    redis_server: RedisServer,
) -> None:
    store = Store('fut-twice', redis_store(redis_server), register=True)
    future = store.future()
    future.set_result('first')
    done = subprocess.run(
        [sys.executable, '-c', textwrap.dedent("""
            import pickle, sys
            from ps_globus.errors import AlreadySet
            future = pickle.loads(sys.stdin.buffer.read())
            try:
                future.set_result('second')
            except AlreadySet as e:
                print('AlreadySet', e.kind)
            """)],
        input=pickle.dumps(future),
        capture_output=True,
        timeout=CHILD_LIMIT_S,
    )
    assert done.stdout.decode().split() == ['AlreadySet', 'Conflict'], done.stderr
    assert future.result() == 'first'


def test_bytes_that_do_not_match_the_manifest_raise_integrity_error(tmp_path: Path) -> None:
    connector = file_store(tmp_path)
    key = connector.new_key()
    connector.set(key, b'the real value')
    # Same length, other bytes: only the manifest's sha256 tells them apart.
    with open(tmp_path / 'futures' / key.id, 'r+b') as f:
        f.write(b'THE')
    with pytest.raises(IntegrityError):
        connector.get(key)


def test_the_wait_is_proxystores_polling_timeout(tmp_path: Path) -> None:
    store = Store('fut-timeout', file_store(tmp_path), register=True)
    future = store.future(polling_interval=0.01, polling_timeout=0.05)
    # Our get of an unset key answers at once (None); ProxyStore's polling gives up.
    assert store.connector.get(future._factory.key) is None
    with pytest.raises(ProxyResolveMissingKeyError):
        future.result()


def test_a_pickled_copy_that_is_collected_does_not_abandon(tmp_path: Path) -> None:
    store = Store('fut-collected', file_store(tmp_path), register=True)
    for future in (store.future(), ps_globus.future(store)):
        copy = pickle.loads(pickle.dumps(future))
        del copy
        gc.collect()
        future.set_result([1, 2, 3])
        assert future.result() == [1, 2, 3]


def test_a_producer_that_fails_inside_ps_globus_future_abandons_and_consumers_say_why(
    redis_server: RedisServer,
) -> None:
    store = Store('fut-gone', redis_store(redis_server), register=True)
    future = ps_globus.future(store, polling_interval=0.01, polling_timeout=CHILD_LIMIT_S)
    assert isinstance(future, ps_globus.futures.Future)
    consumer = start(CONSUMER, pickle.dumps((future, future.proxy())))
    with pytest.raises(RuntimeError), future:
        raise RuntimeError('the simulation diverged')
    said = last_line(consumer)
    assert said.startswith('ProducerGone its producer failed: RuntimeError: the simulation'), said
    # Here too, at once, and a late set is refused.
    with pytest.raises(ProducerGone):
        store.connector.get(future._factory.key)
    with pytest.raises(AlreadySet):
        future.set_result('late')
    # A block left without a result abandons too; one with a result does not.
    quiet = ps_globus.future(store)
    with quiet:
        pass
    with pytest.raises(ProducerGone, match='without setting it'):
        store.connector.get(quiet._factory.key)
    done = ps_globus.future(store)
    with done:
        done.set_result('ok')
    assert done.result() == 'ok'


def test_a_multi_store_that_splits_by_size_refuses_futures_saying_how_to_route_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    small = RedisConnector('127.0.0.1', redis_server.port)
    large = file_store(tmp_path)
    multi = MultiConnector({'small': (small, {'max_size': 1000, 'priority': 1}), 'large': (large, {})})
    with pytest.raises(Unsupported, match='route futures by tags'):
        Store('fut-split', multi).future()


def test_a_connector_without_futures_is_refused_by_proxystore_itself(tmp_path: Path) -> None:
    endpoint = EndpointConnector(['00000000-0000-4000-8000-000000000000'], tmp_path)
    assert not isinstance(endpoint, DeferrableConnector)
    with pytest.raises(NotImplementedError, match='DeferrableConnector'):
        Store('fut-endpoint', endpoint).future()
    with pytest.raises(TypeError, match='ps_globus.future needs'):
        ps_globus.future(Store('fut-endpoint-2', endpoint))


def test_a_future_made_at_site_a_is_set_at_site_b_and_resolves_at_a(emu: Emulator) -> None:
    # ProxyStore cannot do futures on Globus at all (its keys need the task id).
    connector = GlobusConnector('fut-globus', settling_site='b')
    store = Store('fut-globus', connector, register=True)
    future = store.future(polling_interval=0.02, polling_timeout=CHILD_LIMIT_S)
    # A consumer at a waits; a producer at b sets; the object travels b -> a.
    consumer = start(CONSUMER, pickle.dumps((future, future.proxy())), emu.env('a'))
    run_at(
        emu,
        'b',
        """
        import pickle, sys
        future = pickle.loads(sys.stdin.buffer.read())
        future.set_result({'from': 'b', 'data': list(range(100))})
        """,
        stdin=pickle.dumps(future),
    )
    expected = {'from': 'b', 'data': list(range(100))}
    assert last_line(consumer) == repr(expected)
    assert future.result() == expected
    # Only site b may set it: here (site a) a set is refused, naming the site.
    other = store.future()
    with pytest.raises(Unsupported, match='settled only at site "b"'):
        other.set_result('from a')


def test_settling_site_must_be_a_site_of_the_store(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="settling_site 'c'"):
        GlobusConnector('fut-bad-site', settling_site='c')
    rebuilt = GlobusConnector.from_config(GlobusConnector('fut-ok', settling_site='b').config())
    assert rebuilt.config()['settling_site'] == 'b'

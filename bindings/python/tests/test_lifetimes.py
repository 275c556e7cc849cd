"""ProxyStore's lifetimes and owned proxies on our connectors (on Globus, evictions share
delete tasks), and ``ps_globus.lease``: a lease in the state database that outlives the
process that made it."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from proxystore.store import Store
from proxystore.store.lifetimes import ContextLifetime, LeaseLifetime
from proxystore.store.ref import borrow, clone
from proxystore.store.utils import get_key

import ps_globus
from conftest import CHILD_LIMIT_S, RedisServer, run_at_env
from ps_globus.errors import InvalidInput, LeaseEnded
from ps_globus.proxystore import FileConnector, GlobusConnector, RedisConnector
from ps_globus.testing import Emulator

CONNECTORS: dict[str, Callable[[RedisServer, Path], object]] = {
    'file': lambda redis, tmp: FileConnector(str(tmp / 'objects')),
    'redis': lambda redis, tmp: RedisConnector('127.0.0.1', redis.port),
}


def until(condition: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    """Waits for ``condition`` (a guard against a hang, never a measurement)."""
    import time

    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f'{what}: not within {limit_s} s'
        time.sleep(0.01)


@pytest.mark.parametrize('kind', list(CONNECTORS))
def test_proxystore_lifetimes_and_owned_proxies_evict_through_our_connectors(
    kind: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    connector = CONNECTORS[kind](redis_server, tmp_path)
    store = Store(f'lifetimes-{kind}', connector, register=True)
    with ContextLifetime(store) as lifetime:
        proxies = [store.proxy(i, lifetime=lifetime) for i in range(5)]
        keys = [get_key(p) for p in proxies]
        assert all(connector.exists(k) for k in keys)
    assert not any(connector.exists(k) for k in keys)

    lease = LeaseLifetime(store, expiry=0.05)
    key = get_key(store.proxy('leased', lifetime=lease))
    until(lease.done, 'the LeaseLifetime timer')
    assert not connector.exists(key)

    owned = store.owned_proxy([1, 2, 3])
    owned_key = get_key(owned)
    copy = clone(owned)
    borrowed = borrow(owned)
    assert list(borrowed) == [1, 2, 3]
    del borrowed
    del owned
    gc.collect()
    assert not connector.exists(owned_key), 'an owned proxy evicts when it goes'
    copy_key = get_key(copy)
    assert connector.exists(copy_key) and list(copy) == [1, 2, 3]
    del copy
    gc.collect()
    assert not connector.exists(copy_key)


def test_a_static_lifetime_evicts_when_the_process_exits(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    done = run_at_env(
        f"""
        from proxystore.store import Store
        from proxystore.store.lifetimes import StaticLifetime
        from proxystore.store.utils import get_key
        from ps_globus.proxystore import RedisConnector
        store = Store('static', RedisConnector('127.0.0.1', {redis_server.port}), register=True)
        print(get_key(store.proxy('until exit', lifetime=StaticLifetime())).key)
        """
    )
    key = done.stdout.decode().strip()
    assert redis_server.cli('DBSIZE') == '0', f'{key} outlived its process'


def test_a_context_lifetime_on_globus_evicts_both_sites_in_shared_delete_tasks(
    emu: Emulator,
) -> None:
    connector = GlobusConnector('lifetime-globus')
    store = Store('lifetime-globus', connector, register=True)
    lifetime = ContextLifetime(store)
    names = [get_key(store.proxy(bytes([i]) * 100, lifetime=lifetime)).id for i in range(20)]
    ps_globus.flush()
    at_b = Path(emu.sites['b']['local_path']) / 'lifetime-globus'
    until(lambda: all((at_b / n).exists() for n in names), 'the copies at b')
    lifetime.close()
    ps_globus.flush()
    until(lambda: not any((at_b / n).exists() for n in names), 'the deletes at b')
    deletes = emu.stats()['tasks_submitted'].get('DELETE', 0)
    assert 1 <= deletes <= 2, f'{deletes} delete tasks for 20 evictions'


def test_a_ps_globus_lease_outlives_the_process_that_made_it(
    emu: Emulator, tmp_path: Path
) -> None:
    objects = tmp_path / 'objects'
    # A process makes a lease, puts two objects in it, and is killed outright.
    child = subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent(f"""
            import os, signal, sys
            from proxystore.store import Store
            import ps_globus
            from ps_globus.proxystore import FileConnector
            store = Store('leased', FileConnector({str(objects)!r}))
            lease = ps_globus.lease(store, ttl=1.0)
            keys = [lease.put(b'a'), lease.put(b'b')]
            print(lease.id, *(k.id for k in keys), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """)],
        stdout=subprocess.PIPE,
        env=os.environ.copy(),
    )
    out, _ = child.communicate(timeout=CHILD_LIMIT_S)
    assert child.returncode == -signal.SIGKILL
    lease_id, *ids = out.decode().split()
    assert all((objects / i).exists() for i in ids), 'nothing evicted before expiry'
    # ProxyStore's LeaseLifetime would have died with its process; this lease is a row
    # in the state database, evicted by whichever process sees it expired.
    reaped: list[dict] = []
    until(lambda: bool(reaped.extend(ps_globus.reap_expired_leases()) or reaped), 'expiry')
    assert reaped[0]['id'] == lease_id and reaped[0]['evicted'] == 2
    assert not any((objects / i).exists() for i in ids)


def test_a_lease_is_extended_ended_and_reopened_by_id_in_another_process(
    emu: Emulator, tmp_path: Path
) -> None:
    connector = FileConnector(str(tmp_path / 'objects'))
    store = Store('lease-api', connector)
    lease = ps_globus.lease(store, ttl=3600)
    first = lease.expires_at()
    assert lease.extend(60) >= first + 59
    proxy = lease.proxy({'a': 1})
    assert proxy == {'a': 1}
    key = get_key(proxy)
    # Another process adds an object to it by its id, then ends it.
    done = run_at_env(
        f"""
        from proxystore.store import Store
        import ps_globus
        from ps_globus.proxystore import FileConnector
        store = Store('lease-api', FileConnector({str(tmp_path / 'objects')!r}))
        lease = ps_globus.open_lease(store, {lease.id!r})
        print(lease.put('from the other process').key)
        lease.end()
        """
    )
    assert done.returncode == 0
    assert not connector.exists(key)
    with pytest.raises(LeaseEnded):
        lease.extend(60)
    with pytest.raises(LeaseEnded):
        lease.put(b'late')
    assert len(os.listdir(tmp_path / 'objects')) == 0 or all(
        name.startswith('.') for name in os.listdir(tmp_path / 'objects')
    ), 'nothing outlives its lease'
    # A lease of another store's objects is refused.
    live = ps_globus.lease(store, ttl=3600)
    other = Store('other', FileConnector(str(tmp_path / 'other')))
    with pytest.raises(InvalidInput, match='another connector'):
        ps_globus.open_lease(other, live.id)
    with pytest.raises(TypeError, match='ps_globus connector'):
        from proxystore.connectors.local import LocalConnector

        ps_globus.lease(Store('local', LocalConnector()), ttl=1)

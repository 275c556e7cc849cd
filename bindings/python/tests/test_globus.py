"""The Globus connector under ProxyStore, across two sites of the emulator: each consumer
is a separate process configured as site b."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from proxystore.proxy import get_factory
from proxystore.store import Store

from conftest import run_at
from ps_globus.errors import IntegrityError, PsGlobusError, TransferFailed
from ps_globus.proxystore import GlobusConnector, prefetch
from ps_globus.testing import Emulator, emulator

# A consumer at site b: reads pickled proxies on stdin, resolves them all (one batched
# wait), prints their total length.
RESOLVE_ALL = """
    import pickle, sys
    from ps_globus.proxystore import prefetch
    proxies = pickle.loads(sys.stdin.buffer.read())
    prefetch(proxies)
    print(sum(len(p) for p in proxies))
"""

# A consumer that resolves one proxy and pickles whatever exception it raised to stdout.
RESOLVE_AND_REPORT = """
    import pickle, sys
    proxy = pickle.loads(sys.stdin.buffer.read())
    try:
        len(proxy)
        sys.stdout.buffer.write(pickle.dumps(None))
    except Exception as e:
        # ProxyStore raises ProxyResolveError from the connector's error.
        sys.stdout.buffer.write(pickle.dumps(e.__cause__ or e))
"""


def test_a_proxy_pickled_at_site_a_resolves_in_a_process_at_site_b(emu: Emulator) -> None:
    store = Store('cross-site', GlobusConnector('cross-site'), register=True)
    proxy = store.proxy({'weights': list(range(1000))})
    done = run_at(
        emu,
        'b',
        """
        import pickle, sys
        proxy = pickle.loads(sys.stdin.buffer.read())
        print(sum(proxy['weights']))
        """,
        stdin=pickle.dumps(proxy),
    )
    assert done.stdout.strip() == str(sum(range(1000))).encode()


def test_a_proxy_made_with_evict_resolves_once(emu: Emulator) -> None:
    store = Store('evicting', GlobusConnector('evicting'), register=True)
    proxy = store.proxy(b'read me once', evict=True)
    key = get_factory(proxy).key
    done = run_at(
        emu,
        'b',
        """
        import pickle, sys
        from ps_globus.proxystore import GlobusConnector
        from proxystore.proxy import get_factory
        proxy = pickle.loads(sys.stdin.buffer.read())
        key = get_factory(proxy).key
        assert bytes(proxy) == b'read me once'
        print(GlobusConnector('evicting').exists(key))
        """,
        stdin=pickle.dumps(proxy),
    )
    assert done.stdout.strip() == b'False'
    assert store.connector.exists(key), 'evicting at b must not remove the copy at a'


def test_a_hundred_puts_through_a_proxystore_store_travel_in_few_tasks(emu: Emulator) -> None:
    store = Store('hundred', GlobusConnector('hundred'), register=True)
    proxies = [store.proxy(bytes([i]) * 1024) for i in range(100)]
    done = run_at(emu, 'b', RESOLVE_ALL, stdin=pickle.dumps(proxies))
    assert done.stdout.strip() == str(100 * 1024).encode()
    # ProxyStore's own connector makes one task per put: 100.
    assert 1 <= emu.transfer_tasks() <= 5


def test_a_failing_transfer_raises_transfer_failed_with_the_globus_code(tmp_path: Path) -> None:
    # Reported missing at the source: Globus skips the file with its reason.
    doomed = {'kind': 'file_not_found', 'path': '/doomed/*'}
    with emulator(home=tmp_path / 'emu', task_latency_ms=20, faults=[doomed], https_max_size=0) as emu:
        emu.activate('a')
        store = Store('doomed', GlobusConnector('doomed'), register=True)
        proxy = store.proxy(b'never arrives intact')
        done = run_at(emu, 'b', RESOLVE_AND_REPORT, stdin=pickle.dumps(proxy))
    error = pickle.loads(done.stdout)
    assert isinstance(error, TransferFailed), error
    assert error.code == 'FILE_NOT_FOUND'
    assert error.task_id
    assert error.kind == 'TransferFailed'


def test_a_tampered_file_raises_integrity_error(emu: Emulator) -> None:
    store = Store('tampered', GlobusConnector('tampered'), register=True)
    proxy = store.proxy(b'A' * 4096)
    run_at(emu, 'b', RESOLVE_ALL, stdin=pickle.dumps([proxy]))
    objects = [p for p in (Path(emu.sites['b']['local_path']) / 'tampered').iterdir()]
    assert len(objects) == 1, objects
    for path in objects:
        path.write_bytes(b'B' * path.stat().st_size)  # same size, other bytes
    done = run_at(emu, 'b', RESOLVE_AND_REPORT, stdin=pickle.dumps(store.proxy_from_key(get_factory(proxy).key)))
    error = pickle.loads(done.stdout)
    assert isinstance(error, IntegrityError), error
    assert error.path and error.expected != error.found


def test_a_consumer_without_the_transfer_api_still_resolves_an_arrived_file(emu: Emulator) -> None:
    store = Store('offline', GlobusConnector('offline'), register=True)
    proxies = [store.proxy(bytes([i]) * 100) for i in range(10)]
    run_at(emu, 'b', RESOLVE_ALL, stdin=pickle.dumps(proxies))  # the files arrive
    before = emu.stats()['api_requests']
    # A compute node that cannot reach Globus (ProxyStore issue #209): nothing listens
    # on port 9 of loopback.
    unreachable = {'PS_GLOBUS_TRANSFER_URL': 'http://127.0.0.1:9/', 'PS_GLOBUS_AUTH_URL': 'http://127.0.0.1:9/'}
    fresh = [Store('offline', GlobusConnector('offline'), register=False).proxy_from_key(get_factory(p).key) for p in proxies]
    done = run_at(emu, 'b', RESOLVE_ALL, stdin=pickle.dumps(fresh), env=unreachable)
    assert done.stdout.strip() == b'1000'
    assert emu.stats()['api_requests'] == before


def test_prefetch_resolves_many_proxies_in_one_batched_wait(emu: Emulator) -> None:
    store = Store('prefetch', GlobusConnector('prefetch'), register=True)
    proxies = store.proxy_batch([b'x' * n for n in range(1, 31)])
    from proxystore.proxy import is_resolved

    done = run_at(
        emu,
        'b',
        """
        import pickle, sys
        from proxystore.proxy import is_resolved
        from ps_globus.proxystore import prefetch
        proxies = pickle.loads(sys.stdin.buffer.read())
        prefetch(proxies)
        assert all(is_resolved(p) for p in proxies)
        print([len(p) for p in proxies] == list(range(1, 31)))
        """,
        stdin=pickle.dumps(proxies),
    )
    assert done.stdout.strip() == b'True'
    here = [store.proxy_from_key(get_factory(p).key) for p in proxies]
    assert not is_resolved(here[0])
    prefetch(here)  # at the source site: the local files
    assert all(is_resolved(p) for p in here)
    assert bytes(here[4]) == b'xxxxx'


def test_errors_raised_in_a_worker_pickle_back_with_their_fields() -> None:
    error = TransferFailed('boom', kind='TransferFailed', code='FILE_NOT_FOUND', task_id='t-1', hint='check the path')
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is TransferFailed and isinstance(again, PsGlobusError)
    assert (again.code, again.task_id, again.hint) == ('FILE_NOT_FOUND', 't-1', 'check the path')
    assert 'hint: check the path' in str(again)


@pytest.mark.parametrize('size', [0, 1, 5 * 1024 * 1024])
def test_put_file_and_resolve_path_move_files_without_reading_them_into_python(
    emu: Emulator, tmp_path: Path, size: int
) -> None:
    source = Path(emu.sites['a']['local_path']) / f'input-{size}.bin'
    source.write_bytes(bytes(range(256)) * (size // 256) + b'\x07' * (size % 256))
    connector = GlobusConnector('files')
    key = connector.put_file(source)
    done = run_at(
        emu,
        'b',
        f"""
        from ps_globus.proxystore import GlobusConnector, PsGlobusKey
        path = GlobusConnector('files').resolve_path(PsGlobusKey({key.key!r}))
        import hashlib
        print(path)
        print(hashlib.sha256(open(path, 'rb').read()).hexdigest())
        """,
    )
    path, digest = done.stdout.decode().split()
    import hashlib

    assert Path(path).is_relative_to(emu.sites['b']['local_path'])
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()


def test_small_objects_go_by_https_and_large_ones_by_a_task(tmp_path: Path) -> None:
    # The sites set no ceiling: the store's https_max_size decides.
    with emulator(home=tmp_path / 'emu', task_latency_ms=50) as emu:
        emu.activate('a')
        store = Store('lane', GlobusConnector('lane', https_max_size=4096), register=True)
        proxies = [store.proxy(b's' * 100), store.proxy(b'L' * 5000)]
        store.close()
        done = run_at(emu, 'b', RESOLVE_ALL, stdin=pickle.dumps(proxies))
        assert done.stdout.strip() == b'5100'
        routes = emu.stats()['by_route']
        assert routes.get('HTTPS PUT', 0) == 1, routes
        assert emu.transfer_tasks() == 1

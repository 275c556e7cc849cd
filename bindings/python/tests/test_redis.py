"""RedisConnector and MultiConnector from Python: ProxyStore's Store over them, proxies
resolved in another process, tags routed by policy, and ``clear`` scoped to our keys."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from proxystore.store import Store

from ps_globus.errors import InvalidInput, ServiceError
from ps_globus.proxystore import FileConnector, MultiConnector, RedisConnector
from ps_globus.testing import Emulator

from conftest import RedisServer, run_at


def test_proxystore_arguments_work_and_clear_removes_only_our_objects(
    redis_server: RedisServer,
) -> None:
    connector = RedisConnector('127.0.0.1', redis_server.port, clear=True)
    keys = connector.put_batch([b'a', b'b', b'c'])
    redis_server.cli('SET', 'not-ours', 'keep')
    assert redis_server.cli('DBSIZE') == '4'
    assert redis_server.cli('GET', f'ps-globus:{keys[0].id}') == 'a'
    connector.close()  # clear=True, as ProxyStore's, but only our keys go
    assert redis_server.cli('DBSIZE') == '1'
    assert redis_server.cli('GET', 'not-ours') == 'keep'


def test_a_proxy_of_a_multi_store_resolves_in_another_process(
    emu: Emulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    small = RedisConnector('127.0.0.1', redis_server.port)
    large = FileConnector(str(tmp_path / 'large'))
    multi = MultiConnector({'small': (small, {'max_size': 1000, 'priority': 1}), 'large': (large, {})})
    store = Store('py-multi', multi, register=True)
    proxies = [store.proxy(b'tiny'), store.proxy(b'x' * 5000)]
    keys = [store.put(b'k'), store.put(b'y' * 2000)]
    assert [MultiConnector.child_of(k) for k in keys] == ['small', 'large']
    done = run_at(
        emu,
        'b',
        """
        import pickle, sys
        proxies = pickle.loads(sys.stdin.buffer.read())
        assert bytes(proxies[0]) == b'tiny', bytes(proxies[0])
        assert bytes(proxies[1]) == b'x' * 5000
        print('resolved')
        """,
        stdin=pickle.dumps(proxies),
    )
    assert done.stdout.decode().strip() == 'resolved'
    store.close()


def test_tags_route_puts_and_a_put_nobody_accepts_names_every_policy(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    secure = RedisConnector('127.0.0.1', redis_server.port, prefix='secure:')
    plain = FileConnector(str(tmp_path / 'plain'))
    multi = MultiConnector(
        {
            'secure': (secure, {'tags_required': ['sensitive'], 'priority': 1}),
            'plain': (plain, {'tags_allowed': ['public']}),
        }
    )
    store = Store('py-tags', multi, register=False)
    key = store.put(b'x', tags=['sensitive'])
    assert MultiConnector.child_of(key) == 'secure'
    assert MultiConnector.child_of(store.put(b'y', tags=['public'])) == 'plain'
    with pytest.raises(InvalidInput) as refused:
        store.put(b'z', tags=['other'])
    message = str(refused.value)
    assert 'secure: the put lacks the required tag "sensitive"' in message
    assert 'plain: tag "other" is not among tags_allowed' in message


def test_a_server_that_is_gone_is_a_service_error_and_clear_is_refused_elsewhere(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    connector = RedisConnector('127.0.0.1', redis_server.port)
    key = connector.put(b'before')
    redis_server.stop()
    with pytest.raises(ServiceError) as gone:
        connector.get(key)
    assert gone.value.transient
    redis_server.start()
    assert connector.get(key) is None  # no persistence: the restarted server is empty
    assert connector.get(connector.put(b'after')) == b'after'
    with pytest.raises(Exception, match='clear is not available'):
        FileConnector(str(tmp_path / 'f'))._core.clear()


def test_a_password_never_enters_the_config(redis_server: RedisServer) -> None:
    connector = RedisConnector('127.0.0.1', redis_server.port)
    with pytest.raises(InvalidInput, match='PS_GLOBUS_TEST_UNSET_PASSWORD'):
        RedisConnector('127.0.0.1', redis_server.port, password_env='PS_GLOBUS_TEST_UNSET_PASSWORD')
    assert 'password' not in str(connector.config())


def test_site_policies_follow_the_site_each_process_is_at(emu: Emulator, tmp_path: Path) -> None:
    children = {
        'at-a': (FileConnector(str(tmp_path / 'a')), {'sites': ['a']}),
        'at-b': (FileConnector(str(tmp_path / 'b')), {'sites': ['b']}),
    }
    multi = MultiConnector(children)
    here = multi.put(b'made at a')
    assert MultiConnector.child_of(here) == 'at-a'
    done = run_at(
        emu,
        'b',
        """
        import pickle, sys
        from ps_globus.proxystore import MultiConnector
        config, key = pickle.loads(sys.stdin.buffer.read())
        multi = MultiConnector(**config)
        assert multi.get(key) == b'made at a'   # reads go wherever the child is
        print(MultiConnector.child_of(multi.put(b'made at b')))
        """,
        stdin=pickle.dumps((multi.config(), here)),
    )
    assert done.stdout.decode().strip() == 'at-b'

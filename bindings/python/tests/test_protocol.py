"""ProxyStore 1.1's Connector protocol, checked for every ps_globus connector."""

from __future__ import annotations

import json
import pickle
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from proxystore.connectors.protocols import Connector
from proxystore.store import Store
from proxystore.store.config import ConnectorConfig, StoreConfig

from ps_globus.errors import InvalidInput
from ps_globus.proxystore import (
    FileConnector,
    GlobusConnector,
    MultiConnector,
    PsGlobusKey,
    RedisConnector,
    sites_from_proxystore,
)
from ps_globus.testing import Emulator


@pytest.fixture(params=['file', 'globus', 'redis', 'multi'])
def connector(request: Any, tmp_path: Path, emu: Emulator) -> Any:
    if request.param == 'file':
        c = FileConnector(str(tmp_path / 'objects'))
    elif request.param == 'globus':
        c = GlobusConnector('protocol-store')
    else:
        redis = request.getfixturevalue('redis_server')
        c = RedisConnector('127.0.0.1', redis.port)
        if request.param == 'multi':
            small = {'max_size': 10, 'priority': 1}
            large = FileConnector(str(tmp_path / 'large'))
            c = MultiConnector({'small': (c, small), 'large': (large, None)})
    yield c
    c.close()


def test_satisfies_the_runtime_checkable_protocol(connector: Any) -> None:
    assert isinstance(connector, Connector)


def test_config_is_exactly_the_constructor_keywords_and_rebuilds(connector: Any) -> None:
    config = connector.config()
    rebuilt = type(connector)(**config)
    assert rebuilt.config() == config
    assert type(connector).from_config(config).config() == config
    key = connector.put(b'written by the first')
    assert rebuilt.get(key) == b'written by the first'
    # ProxyStore writes store configs as TOML: no None anywhere.
    assert 'null' not in json.dumps(config)


def test_store_config_survives_toml_and_rebuilds_through_proxystore(
    connector: Any, tmp_path: Path
) -> None:
    store = Store('toml-check', connector, register=False)
    path = tmp_path / 'store.toml'
    store.config().write_toml(path)
    read = StoreConfig.from_toml(path)
    rebuilt = ConnectorConfig(kind=read.connector.kind, options=read.connector.options).get_connector()
    assert type(rebuilt) is type(connector)
    assert rebuilt.config() == connector.config()


def test_keys_are_module_level_named_tuples_that_pickle_hash_and_compare(connector: Any) -> None:
    key = connector.put(b'k')
    assert isinstance(key, PsGlobusKey) and isinstance(key, tuple)
    assert all(isinstance(field, str) for field in key)
    again = pickle.loads(pickle.dumps(key))
    assert again == key and hash(again) == hash(key)
    assert {key: 1}[again] == 1
    assert key.kind == connector.kind


def test_put_get_exists_evict(connector: Any) -> None:
    key = connector.put(b'payload')
    assert connector.exists(key)
    assert connector.get(key) == b'payload'
    connector.evict(key)
    assert not connector.exists(key)
    assert connector.get(key) is None
    connector.evict(key)  # idempotent


def test_bytes_like_inputs_are_stored_as_their_bytes(connector: Any) -> None:
    keys = [connector.put(bytearray(b'ba')), connector.put(memoryview(b'mv'))]
    assert [connector.get(k) for k in keys] == [b'ba', b'mv']


def test_batches_keep_their_order(connector: Any) -> None:
    objs = [bytes([i]) * (i + 1) for i in range(20)]
    keys = connector.put_batch(objs)
    assert len(set(keys)) == 20
    assert connector.get_batch(keys) == objs
    connector.evict(keys[3])
    assert connector.get_batch([keys[2], keys[3], keys[4]]) == [objs[2], None, objs[4]]


def test_close_is_idempotent_and_deletes_nothing(connector: Any) -> None:
    key = connector.put(b'stays')
    connector.close()
    connector.close()
    assert type(connector)(**connector.config()).get(key) == b'stays'


def test_a_malformed_or_foreign_key_is_a_value_error(connector: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as bad:
        connector.get(PsGlobusKey('{"v":1,"kind":"file","id":"../../etc/passwd"}'))
    assert isinstance(bad.value, ValueError)
    other = FileConnector(str(tmp_path / 'other')) if connector.kind == 'globus' else None
    if other is not None:
        with pytest.raises(InvalidInput, match='connector'):
            connector.get(other.put(b'x'))


def test_sites_none_reads_the_cli_configuration_file(emu: Emulator) -> None:
    connector = GlobusConnector('from-config-file')
    assert connector.site == 'a'
    assert set(connector.config()['sites']) == {'a', 'b'}
    assert connector.config()['sites']['b']['collection'] == emu.sites['b']['collection']


def test_proxystore_endpoint_configs_become_sites(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxystore.connectors.globus import GlobusEndpoint, GlobusEndpoints

    # The site comes from the host regexes, as in ProxyStore.
    monkeypatch.delenv('PS_GLOBUS_SITE')
    here = re.escape(socket.gethostname())
    a, b = emu.sites['a'], emu.sites['b']
    endpoints = GlobusEndpoints(
        [
            GlobusEndpoint(a['collection'], '/', a['local_path'], here),
            GlobusEndpoint(b['collection'], '/', b['local_path'], r'^login\d$'),
        ]
    )
    sites = sites_from_proxystore(endpoints)
    assert sites[a['collection']]['host_regex'] == f'^(?:{here})$'
    assert sites[b['collection']]['collection_path'] == '/'
    assert sites_from_proxystore(endpoints.dict()) == sites
    connector = GlobusConnector.from_proxystore_endpoints(
        endpoints, 'imported', transfer_url=emu.transfer_url
    )
    assert connector.site == a['collection']
    key = connector.put(b'via imported sites')
    assert connector.get(key) == b'via imported sites'

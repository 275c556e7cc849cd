"""Endpoints: ProxyStore's own, unmodified ``EndpointConnector`` against our endpoint,
and ``ps_globus.proxystore.EndpointConnector`` on the Rust connector."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from proxystore.connectors.endpoint import EndpointConnector as ProxyStoreEndpointConnector
from proxystore.connectors.endpoint import EndpointConnectorError
from proxystore.store import Store

from ps_globus.proxystore import EndpointConnector
from ps_globus.testing import endpoint

from conftest import run_at_env


def test_proxystores_own_connector_works_against_our_endpoint(tmp_path: Path) -> None:
    with endpoint('site-ep', home=tmp_path, max_object_size=10_000_000) as ep:
        connector = ProxyStoreEndpointConnector([ep.uuid], proxystore_dir=str(tmp_path))
        # 5 MB goes as ProxyStore's 1 MB chunks; it comes back in one piece.
        big = os.urandom(5_000_000)
        key = connector.put(big)
        assert key.endpoint_id == ep.uuid
        assert connector.get(key) == big
        assert connector.exists(key)
        connector.evict(key)
        assert not connector.exists(key)
        assert connector.get(key) is None
        # Over the endpoint's max_object_size: refused, as an error, not a hang.
        with pytest.raises(EndpointConnectorError, match='413'):
            connector.put(b'x' * 10_000_001)

        store = Store('ps-endpoint', connector, register=True)
        try:
            proxy = store.proxy({'rows': list(range(1000))})
            assert proxy['rows'][-1] == 999
        finally:
            store.close()


def test_our_connector_rebuilds_in_another_process_from_its_own_directory(tmp_path: Path) -> None:
    with endpoint(home=tmp_path) as ep:
        connector = EndpointConnector([ep.uuid], proxystore_dir=tmp_path)
        store = Store('ours-endpoint', connector, register=True)
        try:
            proxy = store.proxy([1, 2, 3])
            assert proxy == [1, 2, 3]
            # ProxyStore's REST API refuses an empty body; our connector still stores one.
            assert connector.get(connector.put(b'')) == b''
            # A worker rebuilds the store from the proxy: its home endpoint comes from
            # its own PROXYSTORE_HOME (the proxy's proxystore_dir is not followed).
            done = run_at_env(
                """
                import pickle, sys
                print(pickle.loads(sys.stdin.buffer.read()))
                """,
                stdin=pickle.dumps(proxy),
                env={'PROXYSTORE_HOME': str(tmp_path)},
            )
            assert done.stdout.decode().strip() == '[1, 2, 3]'
        finally:
            store.close()

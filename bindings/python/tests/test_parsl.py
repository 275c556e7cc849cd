"""A real Parsl HighThroughputExecutor on loopback, with ProxyStore's serializer over our
GlobusConnector: arguments become proxies at site a and resolve in a worker process
configured as site b."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from proxystore.store import Store

from ps_globus.proxystore import GlobusConnector
from ps_globus.testing import Emulator

BIG = 200_000  # bytes; smaller values (a function's own code among them) travel inline


@pytest.mark.slow
def test_parsl_workers_at_the_other_site_receive_and_resolve_proxies(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    from parsl.serialize.facade import (
        additional_methods_for_deserialization,
        methods_for_data,
        register_method_for_data,
    )
    from parsl.serialize.proxystore import ProxyStoreSerializer

    # process_worker_pool.py comes with Parsl, in this interpreter's bin directory.
    monkeypatch.setenv('PATH', f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}')
    store = Store('parsl-store', GlobusConnector('parsl-store'), register=True)
    # The workers are processes at site b; they import this test module (dill pickles
    # the app by reference).
    env_b = {**emu.env('b'), 'PYTHONPATH': str(Path(__file__).parent)}
    worker_env = ' '.join(f'{k}={shlex.quote(v)}' for k, v in env_b.items())
    config = Config(
        executors=[
            HighThroughputExecutor(
                label='htex_loopback',
                address='127.0.0.1',
                loopback_address='127.0.0.1',
                max_workers_per_node=1,
                encrypted=False,
                provider=LocalProvider(init_blocks=1, max_blocks=1, worker_init=f'export {worker_env}'),
            )
        ],
        strategy='none',
        run_dir=str(tmp_path / 'runinfo'),
    )
    previous = methods_for_data.copy()
    additional_methods_for_deserialization.update(previous)
    methods_for_data.clear()
    register_method_for_data(
        ProxyStoreSerializer(store=store, should_proxy=lambda o: isinstance(o, bytes) and len(o) >= BIG)
    )

    @parsl.python_app
    def inspect(data):  # noqa: ANN001, ANN202 - a Parsl app
        import os

        from proxystore.proxy import Proxy

        return isinstance(data, Proxy), os.environ['PS_GLOBUS_SITE'], len(data), bytes(data[:3])

    try:
        with parsl.load(config):
            futures = [inspect(bytes([n]) * (BIG + n)) for n in range(3)]
            results = [f.result(timeout=120) for f in futures]
    finally:
        methods_for_data.clear()
        methods_for_data.update(previous)
        additional_methods_for_deserialization.clear()
    assert results == [(True, 'b', BIG + n, bytes([n]) * 3) for n in range(3)]
    assert 1 <= emu.transfer_tasks() <= 3

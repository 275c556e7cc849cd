"""Globus Compute's serialization and its worker's task execution, with proxies of our
connector as arguments. Runs in a virtualenv of its own (globus-compute-endpoint pins a
`click` that globus-cli refuses); scripts/test runs this file there.

End-to-end submission needs the Globus Compute web service and its AMQP broker, which
are not reachable offline; the worker's own entry point (`execute_task`) is."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import uuid
from pathlib import Path

import pytest

compute_sdk = pytest.importorskip('globus_compute_sdk', reason='runs in the Globus Compute virtualenv')

from proxystore.store import Store  # noqa: E402

from conftest import run_at  # noqa: E402
from ps_globus.proxystore import GlobusConnector  # noqa: E402
from ps_globus.testing import Emulator  # noqa: E402


def measure(data):  # noqa: ANN001, ANN201 - a Globus Compute function, sent as source
    import os

    from proxystore.proxy import Proxy

    return [isinstance(data, Proxy), os.environ['PS_GLOBUS_SITE'], len(data), sum(data[:10])]


def test_a_proxy_survives_the_compute_serializer_into_a_process_at_site_b(emu: Emulator) -> None:
    from globus_compute_sdk.serialize import ComputeSerializer

    store = Store('compute-serde', GlobusConnector('compute-serde'), register=True)
    payload = ComputeSerializer().serialize(store.proxy(bytes(range(100)) * 10))
    assert len(payload) < 10_000  # a reference, far under the 10 MB submission limit
    done = run_at(
        emu,
        'b',
        """
        import sys
        from globus_compute_sdk.serialize import ComputeSerializer
        proxy = ComputeSerializer().deserialize(sys.stdin.read())
        print(len(proxy), bytes(proxy[:3]).hex())
        """,
        stdin=payload.encode(),
    )
    assert done.stdout.split() == [b'1000', b'000102']


def pack_task(function, *args) -> tuple[uuid.UUID, bytes]:  # noqa: ANN001
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Task
    from globus_compute_sdk.serialize import ComputeSerializer

    serde = ComputeSerializer()
    buffer = serde.pack_buffers([serde.serialize(function), serde.serialize(args), serde.serialize({})])
    task_id = uuid.uuid4()
    return task_id, messagepack.pack(Task(task_id=task_id, task_buffer=buffer))


def run_in_worker(emu: Emulator, tmp_path: Path, body: bytes, task_id: uuid.UUID, **options):  # noqa: ANN001, ANN201
    from globus_compute_common import messagepack
    from globus_compute_endpoint.engines.helper import execute_task

    # The endpoint's process pool: fresh interpreters (spawn) at site b.
    with pytest.MonkeyPatch.context() as env:
        for k, v in emu.env('b').items():
            env.setenv(k, v)
        env.setenv('PYTHONPATH', str(Path(__file__).parent))
        context = multiprocessing.get_context('spawn')
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            future = pool.submit(execute_task, body, task_id, run_dir=str(tmp_path / 'run'), **options)
            return messagepack.unpack(future.result(timeout=120))


def test_the_compute_worker_executes_a_task_whose_argument_is_a_proxy(emu: Emulator, tmp_path: Path) -> None:
    from globus_compute_sdk.serialize import ComputeSerializer

    store = Store('compute-task', GlobusConnector('compute-task'), register=True)
    task_id, body = pack_task(measure, store.proxy(bytes([1]) * 5000))
    result = run_in_worker(emu, tmp_path, body, task_id)
    assert result.error_details is None, result.data
    assert ComputeSerializer().deserialize(result.data) == [True, 'b', 5000, 10]


def test_an_endpoint_that_refuses_dill_reports_the_refusal_and_runs_nothing(
    emu: Emulator, tmp_path: Path
) -> None:
    store = Store('compute-refused', GlobusConnector('compute-refused'), register=True)
    task_id, body = pack_task(measure, store.proxy(b'refused'))
    allowed = ['globus_compute_sdk.serialize.DillCodeSource', 'globus_compute_sdk.serialize.JSONData']
    result = run_in_worker(emu, tmp_path, body, task_id, task_deserializers=allowed)
    assert result.error_details is not None
    assert 'DillDataBase64' in result.data or 'deserializ' in result.data.lower(), result.data

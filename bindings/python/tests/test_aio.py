"""asyncio: awaitable put / get / resolve / prefetch that never block the event loop, also
in a process forked after the library started."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest
from proxystore.proxy import is_resolved
from proxystore.store import Store
from proxystore.store.utils import get_key

import ps_globus.aio as aio
from conftest import run_at, run_at_env
from ps_globus.errors import InvalidInput
from ps_globus.proxystore import FileConnector, GlobusConnector
from ps_globus.testing import Emulator, emulator

#: At site b: awaits an object put at site a whose transfer never ends by itself (ten
#: minutes a task), while a ticker task counts loop turns; then brings the file here by
#: hand, as Globus would, and the await ends.
AT_B = """
import asyncio, os, pickle, shutil, sys
from proxystore.proxy import is_resolved
from proxystore.store import Store
import ps_globus.aio as aio
from ps_globus.proxystore import GlobusConnector

key, proxies, source, here = pickle.loads(sys.stdin.buffer.read())
store = Store('aio-globus', GlobusConnector('aio-globus'), register=True)
ticks = 0

async def ticker():
    global ticks
    while True:
        ticks += 1
        await asyncio.sleep(0.001)

async def main():
    counting = asyncio.create_task(ticker())
    getting = asyncio.create_task(aio.get(store, key))
    while ticks < 20:
        await asyncio.sleep(0.001)
    waited = not getting.done()
    os.makedirs(os.path.dirname(here), exist_ok=True)
    shutil.copy(source, here + '.part')
    os.replace(here + '.part', here)
    value = await asyncio.wait_for(getting, 60)
    counting.cancel()
    print(value, waited, ticks >= 20)

asyncio.run(main())
"""


def await_at_b_an_object_put_at_a(tmp_path: Path, store_name: str, script: str) -> str:
    """Puts an object at site a whose transfer never ends by itself (ten minutes a task),
    then runs ``script`` at site b with ``(key, [], source, here)`` on its stdin; its
    output."""
    with emulator(home=tmp_path / 'emu', task_latency_ms=600_000, https_max_size=0) as emu:
        emu.activate('a')
        store = Store(store_name, GlobusConnector(store_name), register=True)
        key = asyncio.run(aio.put(store, 'from a'))
        source = Path(emu.sites['a']['local_path']) / store_name / key.id
        here = Path(emu.sites['b']['local_path']) / store_name / key.id
        done = run_at(emu, 'b', script, stdin=pickle.dumps((key, [], str(source), str(here))))
        return done.stdout.decode()


def test_an_await_for_a_transfer_leaves_the_event_loop_running(tmp_path: Path) -> None:
    assert await_at_b_an_object_put_at_a(tmp_path, 'aio-globus', AT_B).strip() == 'from a True True'


#: At site b: an await in a loop of its own thread; then what the exit hook does first
#: (while the interpreter still runs); then the object arrives. Its result must not be
#: handed to Python: CPython ends a thread that takes the GIL while the interpreter
#: finalizes, and PyO3's guard unwinding out of it aborted the process (status -6).
EXITING_AT_B = """
import asyncio, os, pickle, shutil, sys, threading, time
from proxystore.store import Store
import ps_globus.aio as aio
from ps_globus import _core
from ps_globus.proxystore import GlobusConnector

key, _, source, here = pickle.loads(sys.stdin.buffer.read())
store = Store('aio-exit', GlobusConnector('aio-exit'), register=True)
loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
getting = asyncio.run_coroutine_threadsafe(aio.get(store, key), loop)
_core.flush_at_exit()
os.makedirs(os.path.dirname(here), exist_ok=True)
shutil.copy(source, here + '.part')
os.replace(here + '.part', here)
deadline = time.monotonic() + 60
while _core.exit_gate_refusals() == 0 and time.monotonic() < deadline:
    time.sleep(0.005)  # polls a condition: the arrival is seen by the library's poller
print(getting.done(), _core.exit_gate_refusals())
"""


def test_a_result_arriving_while_the_interpreter_exits_stays_out_of_python(tmp_path: Path) -> None:
    out = await_at_b_an_object_put_at_a(tmp_path, 'aio-exit', EXITING_AT_B)
    assert out.split() == ['False', '1']


def test_prefetch_and_resolve_at_the_other_site(emu: Emulator) -> None:
    store = Store('aio-prefetch', GlobusConnector('aio-prefetch'), register=True)
    proxies = [store.proxy(i) for i in range(5)]
    done = run_at(
        emu,
        'b',
        """
        import asyncio, pickle, sys
        from proxystore.proxy import is_resolved
        import ps_globus.aio as aio
        proxies = pickle.loads(sys.stdin.buffer.read())
        async def main():
            await aio.prefetch(proxies)
            assert all(is_resolved(p) for p in proxies)
            return [await aio.resolve(p) for p in proxies]
        print(asyncio.run(main()))
        """,
        stdin=pickle.dumps(proxies),
    )
    assert done.stdout.decode().strip() == '[0, 1, 2, 3, 4]'


def test_a_future_resolves_while_its_producer_runs_in_the_same_loop(tmp_path: Path) -> None:
    store = Store('aio-future', FileConnector(str(tmp_path / 'objects')), register=True)

    async def main() -> object:
        future = store.future(polling_interval=0.005, polling_timeout=60)

        async def producer() -> None:
            await asyncio.sleep(0.01)
            future.set_result({'answer': 42})

        setting = asyncio.create_task(producer())
        # Were resolve blocking the loop, the producer could never run: wait_for says so.
        value = await asyncio.wait_for(aio.resolve(future.proxy()), 60)
        await setting
        return value

    assert asyncio.run(main()) == {'answer': 42}


def test_put_get_and_errors_through_the_store(tmp_path: Path) -> None:
    store = Store('aio-files', FileConnector(str(tmp_path / 'objects')), register=True)

    async def main() -> None:
        key = await aio.put(store, [1, 2, 3])
        assert store.get(key) == [1, 2, 3]
        store.cache.evict(key)
        assert await aio.get(store, key) == [1, 2, 3]
        store.evict(key)
        store.cache.evict(key)
        assert await aio.get(store, key, default='gone') == 'gone'
        proxy = store.proxy('once', evict=True, populate_target=False)
        once = get_key(proxy)
        assert await aio.resolve(proxy) == 'once' and is_resolved(proxy)
        assert not store.exists(once), 'a proxy made with evict=True evicts on resolve'
        with pytest.raises(InvalidInput):
            await aio.get(store, ('{"v":1,"kind":"file","id":"../etc"}',))

    asyncio.run(main())


def test_awaits_work_in_a_child_forked_after_the_library_started(tmp_path: Path) -> None:
    done = run_at_env(
        f"""
        import asyncio, os
        from proxystore.store import Store
        import ps_globus.aio as aio
        from ps_globus.proxystore import FileConnector

        store = Store('aio-fork', FileConnector({str(tmp_path / 'objects')!r}), register=True)
        key = asyncio.run(aio.put(store, 'before the fork'))  # the runtime is running now
        pid = os.fork()
        if pid == 0:
            async def child():
                store.cache.evict(key)
                got = await asyncio.wait_for(aio.get(store, key), 60)
                again = await asyncio.wait_for(aio.put(store, 'in the child'), 60)
                return got, again
            try:
                got, again = asyncio.run(child())
                ok = got == 'before the fork' and store.get(again) == 'in the child'
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert done.stdout.decode().strip() == '0'

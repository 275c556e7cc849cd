"""Behaving well inside Python: forked children, Ctrl-C during a wait, interpreter exit."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

from proxystore.store import Store

from conftest import run_at
from ps_globus.proxystore import GlobusConnector, PsGlobusKey
from ps_globus.testing import Emulator, emulator

PRODUCE_AND_EXIT = """
    import pickle, sys
    from proxystore.store import Store
    from ps_globus.proxystore import GlobusConnector
    store = Store('exiting', GlobusConnector('exiting'), register=True)
    proxies = [store.proxy(bytes([n]) * 2048) for n in range(3)]
    sys.stdout.buffer.write(pickle.dumps(proxies))
    # No close(), no flush(): the interpreter's exit must submit the batch.
"""


def test_a_producer_that_exits_right_after_its_puts_still_sends_them(emu: Emulator) -> None:
    produced = run_at(emu, 'a', PRODUCE_AND_EXIT)
    assert emu.transfer_tasks() == 1, 'the batch was not submitted before the producer exited'
    done = run_at(
        emu,
        'b',
        """
        import pickle, sys
        print([bytes(p)[:1] for p in pickle.loads(sys.stdin.buffer.read())])
        """,
        stdin=produced.stdout,
    )
    assert done.stdout.strip() == b"[b'\\x00', b'\\x01', b'\\x02']"


def _child(connector: GlobusConnector, store_name: str, parent_key: PsGlobusKey, out) -> None:  # noqa: ANN001
    import ps_globus
    from proxystore.store import get_store

    try:
        key = connector.put(b'made in the forked child')
        seen = connector.get(parent_key)
        proxy = get_store(store_name).proxy(b'a proxy from the child')
        ps_globus.flush()  # a forked child exits with os._exit: no atexit hooks
        out.send(('ok', key, seen, bytes(proxy)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        out.send(('error', repr(e), None, None))


def test_a_child_forked_after_the_library_started_works(emu: Emulator) -> None:
    connector = GlobusConnector('forked')
    store = Store('forked-store', connector, register=True)
    parent_key = connector.put(b'made in the parent')
    assert connector.get(parent_key) == b'made in the parent'  # the runtime is running
    context = multiprocessing.get_context('fork')
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(connector, store.name, parent_key, send))
    child.start()
    assert receive.poll(120), 'the forked child hung'
    status, key, seen, proxied = receive.recv()
    child.join(120)
    assert status == 'ok', key
    assert child.exitcode == 0
    assert seen == b'made in the parent'
    assert proxied == b'a proxy from the child'
    # The child's transfer really happened: a process at b reads it.
    done = run_at(
        emu,
        'b',
        f"""
        from ps_globus.proxystore import GlobusConnector, PsGlobusKey
        print(GlobusConnector('forked').get(PsGlobusKey({key.key!r})))
        """,
    )
    assert done.stdout.strip() == b"b'made in the forked child'"
    # The parent's connector still works after its child used the library.
    assert connector.get(connector.put(b'parent again')) == b'parent again'
    connector.close()  # sent while the emulator still runs


WAIT_AND_INTERRUPT = """
    import os, signal, sys, threading, time
    from ps_globus.proxystore import GlobusConnector, PsGlobusKey

    key = PsGlobusKey(sys.stdin.read())
    connector = GlobusConnector('slow')
    main = threading.main_thread().ident
    sent = []

    def interrupt_once_waiting():
        # Polls until the main thread is inside the connector's get (waiting off the GIL),
        # then presses Ctrl-C.
        while True:
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code.co_name == 'get' and 'ps_globus' in frame.f_code.co_filename:
                break
            time.sleep(0.01)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_waiting, daemon=True).start()
    try:
        connector.get(key)
        print('returned')
    except KeyboardInterrupt:
        print(f'KeyboardInterrupt {time.monotonic() - sent[0]:.3f}')
"""


def test_ctrl_c_interrupts_a_wait_for_a_transfer(tmp_path: Path) -> None:
    # Each task takes ten minutes: the reader at b would wait that long.
    with emulator(home=tmp_path / 'emu', task_latency_ms=600_000) as emu:
        produced = run_at(
            emu,
            'a',
            """
            from ps_globus.proxystore import GlobusConnector
            print(GlobusConnector('slow').put(b'slow').key)
            """,
        )
        done = run_at(emu, 'b', WAIT_AND_INTERRUPT, stdin=produced.stdout.strip())
    word, seconds = done.stdout.decode().split()
    assert word == 'KeyboardInterrupt'
    print(f'Ctrl-C answered in {seconds} s')

"""Behaving well inside Python: forked children, Ctrl-C during a wait, interpreter exit."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_at
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


LOSE_AT_EXIT = """
    from proxystore.store import Store
    from ps_globus.proxystore import GlobusConnector
    store = Store('lost', GlobusConnector('lost'), register=True)
    proxy = store.proxy(b'never sent')
    print('last line of the script')
    # No close(): the exit hook finds that Globus refuses the login.
"""


def exit_with_a_refused_login(emu: Emulator, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(LOSE_AT_EXIT)],
        env={**os.environ, **emu.env('a'), 'PS_GLOBUS_CLIENT_SECRET': 'not-the-secret', **env},
        capture_output=True,
        timeout=120,
    )


def test_what_a_refused_login_kept_from_globus_is_said_at_exit(emu: Emulator) -> None:
    done = exit_with_a_refused_login(emu, {})
    err = done.stderr.decode()
    # An exit hook cannot change the status; it says what was lost, where, and the fix.
    assert done.returncode == 0, err
    assert done.stdout == b'last line of the script\n'
    assert err.count('NOT sent') == 1, err  # once: not again by the library's own hook
    assert '1 transfer item(s)' in err and 'ps-globus login' in err, err
    assert emu.env('a')['PS_GLOBUS_HOME'] in err, err  # the state database that keeps it
    assert 'not-the-secret' not in err


def test_exit_on_loss_makes_the_exit_status_say_the_work_was_lost(emu: Emulator) -> None:
    done = exit_with_a_refused_login(emu, {'PS_GLOBUS_EXIT_ON_LOSS': '1'})
    err = done.stderr.decode()
    assert done.returncode == 3, err
    assert done.stdout == b'last line of the script\n'  # flushed before the exit
    assert 'NOT sent' in err and 'status 3' in err, err


# Run in a fresh interpreter at site a (this test process has long used SQLite): the
# parent starts the library's runtime through a FileConnector and builds a Globus store,
# forks, and the child uses the Globus store. With USE_STATE_FIRST the parent first puts
# through the Globus connector, which opens the SQLite state database.
FORK_SCRIPT = """
    import multiprocessing, os, sys
    from proxystore.store import Store
    import ps_globus
    from ps_globus.proxystore import FileConnector, GlobusConnector

    files = FileConnector(os.path.join(os.environ['PS_GLOBUS_HOME'], 'files'))
    assert files.get(files.put(b'runtime started')) == b'runtime started'
    connector = GlobusConnector('forked')
    store = Store('forked-store', connector, register=True)
    if USE_STATE_FIRST:
        connector.put(b'the parent opened the state database')

    def child(out):
        try:
            key = connector.put(b'made in the forked child')
            local = files.get(files.put(b'child file'))
            proxy = store.proxy(b'a proxy from the child')
            ps_globus.flush()  # multiprocessing ends a child with os._exit: no exit hooks
            out.send(('ok', key.key, local + b' / ' + bytes(proxy)))
        except BaseException as e:
            out.send((type(e).__name__, str(e), None))

    receive, send = multiprocessing.Pipe(duplex=False)
    worker = multiprocessing.get_context('fork').Process(target=child, args=(send,))
    worker.start()
    assert receive.poll(60), 'the forked child hung'
    print(repr(receive.recv()))
    worker.join(60)
    print(worker.exitcode)
    # The parent's own connector goes on working after its child used the library.
    assert connector.get(connector.put(b'parent again')) == b'parent again'
    connector.close()
"""


def forked_child_works(emu: Emulator, use_state_first: bool, env: dict[str, str] | None = None) -> None:
    done = run_at(emu, 'a', f'USE_STATE_FIRST = {use_state_first}\n' + textwrap.dedent(FORK_SCRIPT), env=env)
    answer, exitcode = done.stdout.decode().strip().split('\n')
    status, key, data = ast.literal_eval(answer)
    assert (status, exitcode) == ('ok', '0'), key
    assert data == b'child file / a proxy from the child'
    # The child's transfer really happened: a process at b reads it.
    done = run_at(
        emu,
        'b',
        f"""
        from ps_globus.proxystore import GlobusConnector, PsGlobusKey
        print(GlobusConnector('forked').get(PsGlobusKey({key!r})))
        """,
    )
    assert done.stdout.strip() == b"b'made in the forked child'"


def test_a_child_forked_after_the_library_started_works(emu: Emulator) -> None:
    forked_child_works(emu, use_state_first=False)


@pytest.mark.skipif(
    not os.environ.get('PS_GLOBUS_TEST_POSTGRES_URL'),
    reason='needs the throw-away PostgreSQL server that scripts/test starts',
)
def test_a_child_forked_after_the_state_database_was_used_works_on_postgresql(emu: Emulator) -> None:
    forked_child_works(
        emu, use_state_first=True, env={'PS_GLOBUS_STATE_URL': os.environ['PS_GLOBUS_TEST_POSTGRES_URL']}
    )


def test_a_child_forked_after_sqlite_was_opened_fails_at_once_saying_what_to_do(emu: Emulator) -> None:
    done = run_at(emu, 'a', 'USE_STATE_FIRST = True\n' + textwrap.dedent(FORK_SCRIPT))
    answer, exitcode = done.stdout.decode().strip().split('\n')
    status, message, _ = ast.literal_eval(answer)
    assert status == 'StorageError', message
    assert 'forked' in message and 'spawn' in message and 'PS_GLOBUS_STATE_URL' in message
    assert exitcode == '0'


FORKED_KEYS = """
    import os
    from ps_globus.proxystore import FileConnector

    files = FileConnector(os.path.join(os.environ['PS_GLOBUS_HOME'], 'files'))
    files.put(b'the parent made a key before forking')
    read, write = os.pipe()
    child = os.fork()
    keys = [files.put(b'x').key for _ in range(3)]
    if child == 0:
        os.write(write, '\\n'.join(keys).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split('\\n')
    os.waitpid(child, 0)
    print(len(set(keys) | set(theirs)))
"""


def test_keys_made_in_a_forked_child_are_not_its_parents(emu: Emulator) -> None:
    # Object ids came from a thread-local generator that a forked child continued where
    # its parent was: the child's puts took the parent's next keys (and a transfer's
    # checksum failed at the other site).
    done = run_at(emu, 'a', textwrap.dedent(FORKED_KEYS))
    assert done.stdout.strip() == b'6'


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
    with emulator(home=tmp_path / 'emu', task_latency_ms=600_000, https_max_size=0) as emu:
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


def test_a_long_wait_is_said_through_the_ps_globus_logger_at_most_once_a_period(tmp_path: Path) -> None:
    # Each task takes ten minutes: the reader at b waits until its own 3 s limit.
    with emulator(home=tmp_path / 'emu', task_latency_ms=600_000, https_max_size=0) as emu:
        produced = run_at(
            emu,
            'a',
            """
            from ps_globus.proxystore import GlobusConnector
            print(GlobusConnector('long').put(b'long').key)
            """,
        )
        done = run_at(
            emu,
            'b',
            """
            import logging, sys
            logging.basicConfig(stream=sys.stdout, format='%(name)s %(levelname)s %(message)s')
            from ps_globus.errors import WaitTimeout
            from ps_globus.proxystore import GlobusConnector, PsGlobusKey
            try:
                GlobusConnector('long', wait_timeout_s=3).get(PsGlobusKey(sys.stdin.read()))
            except WaitTimeout:
                print('gave up')
            """,
            stdin=produced.stdout.strip(),
            env={'PS_GLOBUS_WAIT_REPORT_S': '1'},
        )
    lines = done.stdout.decode().splitlines()
    said = [line for line in lines if line.startswith('ps_globus WARNING ps-globus: still waiting for object long/')]
    assert said, lines
    assert 'to arrive at site b' in said[0] and 'gives up in' in said[0], said
    assert 'its Globus task' in said[0] and 'ps-globus task show' in said[0], said
    # A 3 s wait reported every second at most: never more than 3 summaries.
    assert len(said) <= 3, said
    assert lines[-1] == 'gave up'

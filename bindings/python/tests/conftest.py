"""Fixtures of the Python package's tests: the emulator with sites a and b, this process
at site a, and helpers to run a script as a process at another site."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ps_globus.testing import Emulator, emulator

#: A guard against a hang, never a measurement: every child finishes in seconds.
CHILD_LIMIT_S = 120


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    """The emulator (sites a and b, 50 ms per task), with this process at site a. Its
    sites send every object by Transfer (`https_max_size = 0`): these tests are of that
    path; the HTTPS lane's are the Rust library's (`tests/lane.rs`) and the README's."""
    with emulator(home=tmp_path / 'emu', task_latency_ms=50, https_max_size=0) as e:
        e.activate('a')
        yield e


def run_at(
    emu: Emulator,
    site: str,
    script: str,
    stdin: bytes = b'',
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Runs ``script`` (dedented) in a new interpreter configured as a process at ``site``;
    fails the test if it exits non-zero."""
    return run_at_env(script, stdin, {**emu.env(site), **(env or {})})


def run_at_env(
    script: str, stdin: bytes = b'', env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Runs ``script`` (dedented) in a new interpreter with ``env`` added to this
    process's environment; fails the test if it exits non-zero."""
    child_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(script)],
        input=stdin,
        env=child_env,
        capture_output=True,
        timeout=CHILD_LIMIT_S,
    )
    assert done.returncode == 0, done.stderr.decode(errors='replace')
    return done


def start(script: str, stdin: bytes, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Starts ``script`` in a new interpreter, feeds it ``stdin``, and returns once it
    said its first line (``waiting``)."""
    child = subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    child.stdin.write(stdin)
    child.stdin.close()
    child.stdin = None  # closed: communicate() must not flush it
    first = child.stdout.readline()
    if first != b'waiting\n':
        child.wait(timeout=CHILD_LIMIT_S)
        pytest.fail(f'the consumer said {first!r}: {child.stderr.read().decode()}')
    return child


def last_line(child: subprocess.Popen[bytes]) -> str:
    out, err = child.communicate(timeout=CHILD_LIMIT_S)
    assert child.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


class RedisServer:
    """A throw-away ``redis-server`` (Debian's package) on a free loopback port, without
    persistence."""

    def __init__(self, tmp_path: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            self.port = s.getsockname()[1]
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ['redis-server', '--bind', '127.0.0.1', '--port', str(self.port), '--save', '',
             '--appendonly', 'no', '--dir', str(self.dir)],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if b'Ready to accept connections' in line:
                return
        raise RuntimeError('redis-server exited before it was ready')

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ['redis-cli', '-p', str(self.port), *args], capture_output=True, check=True
        )
        return done.stdout.decode().strip()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own."""
    (tmp_path / 'redis').mkdir()
    server = RedisServer(tmp_path / 'redis')
    yield server
    server.stop()

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
    """The emulator (sites a and b, 50 ms per task), with this process at site a."""
    with emulator(home=tmp_path / 'emu', task_latency_ms=50) as e:
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
    child_env = {**os.environ, **emu.env(site), **(env or {})}
    done = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(script)],
        input=stdin,
        env=child_env,
        capture_output=True,
        timeout=CHILD_LIMIT_S,
    )
    assert done.returncode == 0, done.stderr.decode(errors='replace')
    return done

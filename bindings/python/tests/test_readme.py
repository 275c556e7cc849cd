"""Every Python block of the README runs as written, after a harness prelude the README
does not show (an emulator, a Parsl configuration), and fails this test when it does not
do what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / 'README.md'


def python_blocks() -> list[str]:
    return re.findall(r'^```python\n(.*?)^```', README.read_text(), re.S | re.M)


def run(code: str, cwd: Path, timeout: int = 300) -> str:
    done = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, 'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}'},
    )
    assert done.returncode == 0, done.stderr.decode(errors='replace')
    return done.stdout.decode()


def quick_start(code: str, tmp_path: Path) -> None:
    # 1 KiB objects go by the collections' HTTPS (the lane): no Globus task.
    assert run(code, tmp_path).strip() == '102400 bytes resolved at lab in 0 task(s)'


# The Parsl block defines the store and the app; the prelude starts the emulator (this
# process at hpc), the postlude runs the app on a HighThroughputExecutor whose workers are
# processes at lab, as the block's closing comment says. Before the README had
# `additional_methods_for_deserialization.update(...)`, `result()` never returned.
PARSL_PRELUDE = """
from ps_globus.testing import emulator
running = emulator(sites=('hpc', 'lab'), task_latency_ms=50)
emu = running.__enter__()
emu.activate('hpc')
"""

PARSL_POSTLUDE = """
import shlex
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider
worker_env = ' '.join(f'{k}={shlex.quote(v)}' for k, v in emu.env('lab').items())
config = Config(
    executors=[HighThroughputExecutor(
        label='readme', address='127.0.0.1', loopback_address='127.0.0.1',
        max_workers_per_node=1, encrypted=False,
        provider=LocalProvider(init_blocks=1, max_blocks=1, worker_init=f'export {worker_env}'),
    )],
    strategy='none',
)
with parsl.load(config):
    print(analyse(b'x' * 2_000_000).result(timeout=120))
store.close()
print(emu.transfer_tasks(), 'task(s)')
running.__exit__(None, None, None)
"""


def parsl_snippet(code: str, tmp_path: Path) -> None:
    out = run(PARSL_PRELUDE + code + textwrap.dedent(PARSL_POSTLUDE), tmp_path)
    # 2 MB is under the HTTPS lane's 4 MiB: no Globus task.
    assert out.split() == ['2000000', '0', 'task(s)'], out


def endpoint_and_globus(code: str, tmp_path: Path) -> None:
    assert run(code, tmp_path).split() == ['near', 'far', '5000000']


# Each Python block, by a line it holds: how it runs. A block none knows fails the test.
RUNNERS = {
    '# this process is at site hpc': quick_start,
    '@parsl.python_app': parsl_snippet,
    "'near': (EndpointConnector": endpoint_and_globus,
}


def test_every_python_block_of_the_readme_has_a_runner() -> None:
    blocks = python_blocks()
    assert len(blocks) == len(RUNNERS), f'{len(blocks)} Python blocks, {len(RUNNERS)} runners'
    for block in blocks:
        assert sum(line in block for line in RUNNERS) == 1, block


@pytest.mark.parametrize('line', list(RUNNERS))
def test_the_readme_python_block_runs_as_written(line: str, tmp_path: Path) -> None:
    (block,) = [b for b in python_blocks() if line in b]
    RUNNERS[line](block, tmp_path)

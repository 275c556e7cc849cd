"""``ps_globus.job`` against the emulator and the throw-away Slurm cluster that
``scripts/test`` starts (``PS_GLOBUS_TEST_SLURM_CONF``, and ``PS_GLOBUS_BIN``: the
``ps-globus`` command the job's first step runs): a held job is released by a watcher
pass from Python, and its stage-out follows its end."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import ps_globus
from ps_globus.testing import Emulator

SLURM_CONF = os.environ.get('PS_GLOBUS_TEST_SLURM_CONF')
BIN = os.environ.get('PS_GLOBUS_BIN')

pytestmark = pytest.mark.skipif(
    not (SLURM_CONF and BIN),
    reason='needs the throw-away Slurm cluster and the ps-globus command (scripts/test)',
)

#: A guard against a hang, never a measurement: the job takes a second or two.
LIMIT_S = 120


def until(check, what: str):  # type: ignore[no-untyped-def]
    """Watcher passes until ``check()`` returns something true; that."""
    deadline = time.monotonic() + LIMIT_S
    while True:
        ps_globus.job.watch()
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, what


def test_a_held_job_is_released_and_staged_out_from_python(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv('SLURM_CONF', str(SLURM_CONF))
    out = Path(emu.sites['a']['local_path']) / 'job-out' / 'result.dat'
    out.parent.mkdir(parents=True)
    script = tmp_path / 'job.sh'
    script.write_text(f"#!/bin/sh\nprintf 'from python' > '{out}'\n")
    submitted = ps_globus.job.submit(
        script,
        sbatch=['-o', str(tmp_path / 'slurm.out')],
        stage_out=[(out, 'b:/from-python/result.dat')],
        hold_until_staged=True,
    )
    assert submitted.held
    assert ps_globus.job.status(submitted.job_id)[0]['held'] is True
    # Nothing to stage in: the first pass releases it.
    report = ps_globus.job.watch()
    assert report['released'] == [submitted.job_id], report
    done = until(
        lambda: [
            s
            for s in ps_globus.job.status(submitted.job_id)
            if not s['tracked'] and s['stage_out']['arrived'] == 1
        ],
        'the job ends and its stage-out arrives',
    )
    assert done[0]['state'] == 'COMPLETED', done
    assert done[0]['releases'] == 1
    copied = Path(emu.sites['b']['local_path']) / 'from-python' / 'result.dat'
    assert copied.read_bytes() == b'from python'


def test_a_refused_submission_raises_invalid_input_and_submits_nothing(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv('SLURM_CONF', str(SLURM_CONF))
    script = tmp_path / 'no-shebang.sh'
    script.write_text('echo hi\n')
    with pytest.raises(ps_globus.errors.InvalidInput, match='#!'):
        ps_globus.job.submit(script, stage_in=[('b:/data/x', str(tmp_path / 'x'))])
    with pytest.raises(ValueError, match='fail, cancel, hold, run'):
        ps_globus.job.submit(script, on_stage_in_failure='retry')
    assert emu.transfer_tasks() == 0
    assert ps_globus.job.status() == []

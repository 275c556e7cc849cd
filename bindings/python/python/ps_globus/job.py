"""Slurm jobs tied to their data: :func:`submit` a batch script whose stage-in starts now,
while the job queues (its first step waits for the files, verified, before the script
runs); :func:`watch` (one pass) releases held jobs whose stage-in arrived, stages out the
jobs that ended and cancels the stage-in of cancelled ones; :func:`status` shows a job
beside its data. The same calls as ``ps-globus job submit|watch|status``, on the same
state database.

Addresses are as in :mod:`ps_globus.staging`: a stage-in's source is ``SITE:PATH`` or
``COLLECTION_UUID:PATH`` and its destination a path at this site; a stage-out's source
is a path at this site.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ps_globus import _core


@dataclass(frozen=True)
class SubmittedJob:
    """A job :func:`submit` gave to Slurm."""

    job_id: str
    """Its id, as ``sbatch --parsable`` printed it."""
    held: bool
    """Submitted held, for a watcher to release once its stage-in arrived."""
    labels: list[str] = field(default_factory=list)
    """The transfer batches its stage-in went into."""
    stage_in: list[dict[str, Any]] = field(default_factory=list)
    """The files its first step waits for: ``item``, ``path``, ``size``, ``sha256``."""
    warnings: list[str] = field(default_factory=list)
    """Said at submission (a stage-in likely to arrive after the job starts, ...)."""


Pair = tuple[str | os.PathLike[str], str | os.PathLike[str]]


def _program(program: str | os.PathLike[str] | None) -> str:
    """The ``ps-globus`` command the job's first step runs."""
    if program is not None:
        return os.fspath(program)
    found = os.environ.get('PS_GLOBUS_BIN') or shutil.which('ps-globus')
    if not found:
        raise FileNotFoundError(
            "the job's first step runs the ps-globus command, which is not on PATH: "
            'install it where the compute nodes see it, or pass program=PATH'
        )
    return found


def _pairs(pairs: Iterable[Pair]) -> list[tuple[str, str]]:
    return [(os.fspath(source), os.fspath(destination)) for source, destination in pairs]


def submit(
    script: str | os.PathLike[str],
    *args: str,
    sbatch: Sequence[str] = (),
    stage_in: Iterable[Pair] = (),
    stage_in_refs: Sequence[str] = (),
    stage_out: Iterable[Pair] = (),
    stage_out_always: bool = False,
    hold_until_staged: bool = False,
    on_stage_in_failure: str = 'fail',
    stage_in_timeout: float = 3600.0,
    program: str | os.PathLike[str] | None = None,
) -> SubmittedJob:
    """Submits ``script`` (with ``args``) to Slurm, ``sbatch`` options passed through
    (but ``--hold``, ``--parsable``, ``--wrap``, ``--array``, ``--wait``, ``--test-only``).

    The stage-in (``(SRC, DST)`` pairs) is submitted to Globus now; the job is submitted
    unheld, so it ages in the queue, and its first step waits up to ``stage_in_timeout``
    seconds for the files, verified, and for the objects of the named references
    ``stage_in_refs`` (their local paths in ``PS_GLOBUS_REF_<NAME>``). With ``hold_until_staged`` it is submitted held and
    a watcher (:func:`watch`, ``ps-globus job watch``) releases it once they arrived: its
    queue age then counts from the release, unless the site accrues age for held jobs.
    ``on_stage_in_failure``: ``fail`` (the first step fails with Globus's reason),
    ``cancel``, ``hold`` or ``run``. The stage-out (``(SRC, DST)`` pairs) is queued by a
    watcher after the job ends ``COMPLETED`` (any end, with ``stage_out_always``).
    """
    request = {
        'script': os.fspath(script),
        'args': list(args),
        'sbatch': list(sbatch),
        'stage_in': _pairs(stage_in),
        'stage_in_refs': list(stage_in_refs),
        'stage_out': _pairs(stage_out),
        'stage_out_always': stage_out_always,
        'hold_until_staged': hold_until_staged,
        'on_stage_in_failure': on_stage_in_failure,
        'stage_in_timeout_s': float(stage_in_timeout),
        'program': _program(program),
    }
    raw = json.loads(_core.job_submit(json.dumps(request)))
    return SubmittedJob(
        job_id=raw['job_id'],
        held=raw['held'],
        labels=raw['labels'],
        stage_in=raw['stage_in'],
        warnings=raw['warnings'],
    )


def watch() -> dict[str, Any]:
    """One watcher pass over this identity's tracked jobs (releases, stage-outs, cancels,
    each done once however many watchers run); what it did, as a dict (``released``,
    ``staged_out``, ``cancelled_stage_in``, ``cancelled``, ``ended``, ``errors``)."""
    report: dict[str, Any] = json.loads(_core.job_watch())
    return report


def status(job_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Job ``job_id``'s report (or this identity's ``limit`` most recent jobs'): its Slurm
    ``state``, ``held``, ``reason``, and ``stage_in`` / ``stage_out`` progress by files and
    bytes, as ``ps-globus job status -F json`` prints them."""
    reports: list[dict[str, Any]] = json.loads(_core.job_status(job_id, limit))
    return reports

"""Staging as calls: ``ps-globus transfer``, ``stage-in`` and ``stage-out`` with the same
addresses, options and transfer manager.

An address is ``SITE:PATH`` (a configured site), ``COLLECTION_UUID:PATH``, or a local
path, which means the current site (``PS_GLOBUS_SITE`` or the host regexes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ps_globus import _core
from ps_globus.errors import TransferFailed


@dataclass(frozen=True)
class ItemResult:
    """One file or directory of a transfer, as last seen."""

    source_path: str
    destination_path: str
    state: str
    """``PENDING``, ``SUCCEEDED``, ``FAILED`` or ``CANCELED``."""
    task_id: str | None
    code: str | None = None
    description: str | None = None
    bytes_transferred: int = 0


@dataclass(frozen=True)
class TransferReport:
    """What a transfer call submitted and how it ended."""

    task_ids: list[str]
    labels: list[str]
    items: list[ItemResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every item succeeded."""
        return all(i.state == 'SUCCEEDED' for i in self.items)

    @property
    def failed(self) -> list[ItemResult]:
        """The items that failed or were canceled."""
        return [i for i in self.items if i.state in ('FAILED', 'CANCELED')]


Line = tuple[str, str] | tuple[str, str, bool]


def _run(
    lines: Sequence[Line],
    direction: str,
    *,
    sync_level: str | None,
    verify_checksum: bool,
    deadline: str | None,
    label: str | None,
    timeout: float | None,
    wait: bool,
    check: bool,
) -> TransferReport:
    items = [
        (os.fspath(line[0]), os.fspath(line[1]), bool(line[2]) if len(line) > 2 else False)
        for line in lines
    ]
    options = {
        'sync_level': sync_level,
        'verify_checksum': verify_checksum,
        'deadline': deadline,
        'label': label,
        'timeout_s': timeout,
        'wait': wait,
    }
    raw = json.loads(_core.transfer(items, direction, json.dumps(options)))
    report = TransferReport(
        task_ids=raw['task_ids'],
        labels=raw['labels'],
        items=[_item(i) for i in raw['items']],
    )
    if check and report.failed:
        first = report.failed[0]
        raise TransferFailed(
            f'{len(report.failed)} of {len(report.items)} item(s) failed; first: '
            f'{first.source_path} -> {first.destination_path}: {first.code}: {first.description}',
            kind='TransferFailed',
            code=first.code or first.state,
            description=first.description,
            task_id=first.task_id,
            source_path=first.source_path,
            destination_path=first.destination_path,
            report=report,
        )
    return report


def _item(raw: dict[str, Any]) -> ItemResult:
    return ItemResult(
        source_path=raw['source_path'],
        destination_path=raw['destination_path'],
        state=raw['state'],
        task_id=raw.get('task_id'),
        code=raw.get('code'),
        description=raw.get('description'),
        bytes_transferred=raw.get('bytes_transferred', 0),
    )


def transfer(
    source: str | os.PathLike[str] | None = None,
    destination: str | os.PathLike[str] | None = None,
    *,
    batch: Iterable[Line] | None = None,
    recursive: bool = False,
    sync_level: str | None = None,
    verify_checksum: bool = True,
    deadline: str | None = None,
    label: str | None = None,
    timeout: float | None = None,
    wait: bool = True,
    check: bool = True,
    _direction: str = 'any',
) -> TransferReport:
    """Copies ``source`` to ``destination`` (or every ``(source, destination[,
    recursive])`` of ``batch``) with Globus, in as few tasks as the options allow, and
    waits (unless ``wait=False``).

    Options are the CLI's: ``sync_level`` (``exists``, ``size``, ``mtime``,
    ``checksum``), ``verify_checksum``, ``deadline`` (RFC 3339, UTC), ``label``,
    ``timeout`` in seconds (:class:`~ps_globus.errors.WaitTimeout` past it; what was
    submitted goes on). A plan that would copy a file onto itself, nest a directory into
    itself, or send two sources to one destination is refused before anything is
    submitted. With ``check`` (the default) a failed item raises
    :class:`~ps_globus.errors.TransferFailed`, whose ``report`` holds every item.
    """
    if batch is not None:
        if source is not None or destination is not None:
            raise ValueError('give source and destination, or batch, not both')
        lines: list[Line] = [tuple(line) for line in batch]  # type: ignore[misc]
    else:
        if source is None or destination is None:
            raise ValueError('give source and destination (or batch)')
        lines = [(os.fspath(source), os.fspath(destination), recursive)]
    if recursive:
        lines = [(line[0], line[1], True) for line in lines]
    return _run(
        lines,
        _direction,
        sync_level=sync_level,
        verify_checksum=verify_checksum,
        deadline=deadline,
        label=label,
        timeout=timeout,
        wait=wait,
        check=check,
    )


def stage_in(
    source: str | None = None, destination: str | os.PathLike[str] | None = None, **options: Any
) -> TransferReport:
    """:func:`transfer` into this site: every destination is a local path."""
    return transfer(source, destination, _direction='in', **options)


def stage_out(
    source: str | os.PathLike[str] | None = None, destination: str | None = None, **options: Any
) -> TransferReport:
    """:func:`transfer` out of this site: every source is a local path."""
    return transfer(source, destination, _direction='out', **options)


__all__ = ['ItemResult', 'TransferReport', 'stage_in', 'stage_out', 'transfer']

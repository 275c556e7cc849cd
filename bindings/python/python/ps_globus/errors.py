"""Exceptions raised by ps_globus.

Every class derives from :class:`PsGlobusError` and pickles (so a failure inside a Parsl
or Globus Compute worker arrives intact where the result is read). Each carries:

* ``kind`` -- the library's error kind (``TransferFailed``, ``Timeout``, ...);
* ``hint`` -- what to do about it, when that is a command or a setting, else ``None``;
* ``transient`` -- whether the same call may succeed if repeated.
"""

from __future__ import annotations

from typing import Any


class PsGlobusError(Exception):
    """Base class of every ps_globus error."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.kind: str | None = fields.pop('kind', None)
        self.hint: str | None = fields.pop('hint', None)
        self.transient: bool = bool(fields.pop('transient', False))
        for name, value in fields.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        if self.hint:
            return f'{self.message}\nhint: {self.hint}'
        return self.message

    # BaseException pickles (class, args, __dict__): args holds the message and
    # __dict__ every field, so the default reduction already round-trips.


class TransferFailed(PsGlobusError):
    """A Globus transfer failed: ``code`` is Globus's (``FILE_NOT_FOUND``,
    ``CHECKSUM_MISMATCH``, ``CANCELED``, ...), with ``description``, ``task_id``,
    ``source_path`` and ``destination_path``."""

    code: str
    description: str | None = None
    task_id: str | None = None
    source_path: str | None = None
    destination_path: str | None = None


class NeedsAttention(TransferFailed):
    """Globus paused the task until someone acts (an expired login or consent):
    ``hint`` says what to run."""


class IntegrityError(PsGlobusError):
    """The bytes at this site do not match what their key promises (size and sha256):
    ``path``, ``expected``, ``found``."""


class LoginRequired(PsGlobusError):
    """No usable login: run ``ps-globus login``, or set a service identity
    (``PS_GLOBUS_CLIENT_ID`` and ``PS_GLOBUS_CLIENT_SECRET``)."""


class ConsentRequired(LoginRequired):
    """A collection needs a ``data_access`` consent: ``collections`` lists them and
    ``hint`` the login command that grants it."""

    collections: list[str] = []
    required_scopes: list[str] = []


class WaitTimeout(PsGlobusError, TimeoutError):
    """A wait passed its time limit (a transfer still on its way, a service that never
    answered)."""


class InvalidInput(PsGlobusError, ValueError):
    """A key, configuration, site name or address that is not well formed or not meant
    for this place."""


class Unsupported(PsGlobusError):
    """Written by a newer ps-globus, or an operation this connector cannot do."""


class NotFound(PsGlobusError, LookupError):
    """The object or the thing named does not exist here."""


class Conflict(PsGlobusError):
    """A name is taken by something else (a reference, a store)."""


class AlreadySet(Conflict):
    """A future (a deferred key) is settled already: the first ``set`` wins and this
    one changed nothing. ``what`` names the future."""


class ProducerGone(NotFound):
    """A future will never be set: its producer gave it up (``abandon``, or an
    exception inside ``with ps_globus.future(...)``). ``what`` names the future,
    ``reason`` says why."""


class LeaseEnded(NotFound):
    """A lease (:func:`ps_globus.lease`) has expired or was ended: its objects are
    evicted, nothing joins it and it cannot be extended. ``lease`` is its id."""


class ServiceError(PsGlobusError):
    """Globus (or the network to it) failed; ``transient`` says whether to retry."""


class StorageError(PsGlobusError, OSError):
    """The local file system or the state database failed (a full disk, a permission)."""



__all__ = [
    'PsGlobusError',
    'TransferFailed',
    'NeedsAttention',
    'IntegrityError',
    'LoginRequired',
    'ConsentRequired',
    'WaitTimeout',
    'InvalidInput',
    'Unsupported',
    'NotFound',
    'Conflict',
    'AlreadySet',
    'ProducerGone',
    'LeaseEnded',
    'ServiceError',
    'StorageError',
]

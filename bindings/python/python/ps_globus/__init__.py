"""ps_globus: pass-by-reference across computing facilities, Globus Transfer moving the
bytes, with a Rust engine.

* :mod:`ps_globus.proxystore` -- ProxyStore connectors (``GlobusConnector``, ``RedisConnector``, ``MultiConnector``,
  ``FileConnector``) and :func:`~ps_globus.proxystore.prefetch`;
* :func:`transfer`, :func:`stage_in`, :func:`stage_out` -- the CLI's staging as calls;
* :mod:`ps_globus.job` -- Slurm jobs whose stage-in starts at submission;
* :func:`save_reference` and friends -- named references to stored objects;
* :mod:`ps_globus.errors` -- the exceptions;
* :mod:`ps_globus.testing` -- the Globus emulator, for tests.

Waits release the GIL and answer Ctrl-C. Transfers held back for batching are submitted
when the interpreter exits; what cannot be sent then (a refused login) is said on stderr,
and with ``PS_GLOBUS_EXIT_ON_LOSS=1`` the process exits with status 3. A process forked after ps_globus started here (multiprocessing,
a process pool) rebuilds its connectors on first use.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

from ps_globus import _core
from ps_globus.errors import (
    AlreadySet,
    ConsentRequired,
    IntegrityError,
    InvalidInput,
    LoginRequired,
    NeedsAttention,
    ProducerGone,
    PsGlobusError,
    TransferFailed,
    WaitTimeout,
)
from ps_globus.leases import Lease, lease, open_lease, reap_expired_leases
from ps_globus.refs import (
    Reference,
    import_reference,
    list_references,
    load_reference,
    remove_reference,
    save_reference,
)
from ps_globus import job
from ps_globus.staging import TransferReport, stage_in, stage_out, transfer

__version__: str = _core.__version__


def future(store, **options):  # type: ignore[no-untyped-def]
    """A ProxyStore future on ``store`` that its producer can abandon; see
    :func:`ps_globus.futures.future` (imported on first use: it needs ProxyStore)."""
    from ps_globus.futures import future as make

    return make(store, **options)


def flush() -> None:
    """Submits every transfer this process holds back for batching, now.

    Raises :class:`LoginRequired` when Globus refuses the login (what is held back stays
    committed, for the next process), :class:`WaitTimeout` when the service does not
    take it within the limit.
    """
    left = _core.flush_all()
    if left:
        raise WaitTimeout(
            f'{left} transfer manager(s) could not submit everything they hold back',
            kind='Timeout',
            hint='run `ps-globus status`: the next process on the same state database '
            'submits what is left',
        )


def _flush_at_exit() -> None:
    # A put returns once its transfer is committed, while its batch waits a moment for
    # company: a script that ends right after its puts must still send them. Run while
    # the interpreter is whole. What could not be sent (a refused login, a service that is
    # down) is said on stderr -- what, where it is kept, what to do -- and, only when
    # asked (PS_GLOBUS_EXIT_ON_LOSS=1), makes the exit status non-zero: an exit hook
    # cannot change it otherwise, and os._exit skips the hooks registered before this one.
    try:
        reports = _core.flush_at_exit()
    except BaseException as error:  # noqa: BLE001 - nothing may escape an exit hook
        reports = [f'ps-globus: transfers held back at exit may not have been sent: {error}']
    if not reports:
        return
    for report in reports:
        print(report, file=sys.stderr)
    if os.environ.get('PS_GLOBUS_EXIT_ON_LOSS') == '1':
        print('ps-globus: exiting with status 3 (PS_GLOBUS_EXIT_ON_LOSS=1)', file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S112 - a closed stream has nothing to lose
                continue
        logging.shutdown()
        os._exit(EXIT_ON_LOSS_STATUS)


#: The exit status of a process that could not send what it held, with
#: ``PS_GLOBUS_EXIT_ON_LOSS=1``.
EXIT_ON_LOSS_STATUS = 3


atexit.register(_flush_at_exit)

__all__ = [
    'AlreadySet',
    'ConsentRequired',
    'IntegrityError',
    'InvalidInput',
    'Lease',
    'LoginRequired',
    'NeedsAttention',
    'ProducerGone',
    'PsGlobusError',
    'Reference',
    'TransferFailed',
    'TransferReport',
    'WaitTimeout',
    'flush',
    'future',
    'import_reference',
    'job',
    'lease',
    'list_references',
    'load_reference',
    'open_lease',
    'reap_expired_leases',
    'remove_reference',
    'save_reference',
    'stage_in',
    'stage_out',
    'transfer',
]

"""ps_globus: pass-by-reference across computing facilities, Globus Transfer moving the
bytes, with a Rust engine.

* :mod:`ps_globus.proxystore` -- ProxyStore connectors (``GlobusConnector``, ``RedisConnector``, ``MultiConnector``,
  ``FileConnector``) and :func:`~ps_globus.proxystore.prefetch`;
* :func:`transfer`, :func:`stage_in`, :func:`stage_out` -- the CLI's staging as calls;
* :func:`save_reference` and friends -- named references to stored objects;
* :mod:`ps_globus.errors` -- the exceptions;
* :mod:`ps_globus.testing` -- the Globus emulator, for tests.

Waits release the GIL and answer Ctrl-C. Transfers held back for batching are submitted
when the interpreter exits. A process forked after ps_globus started here (multiprocessing,
a process pool) rebuilds its connectors on first use.
"""

from __future__ import annotations

import atexit

from ps_globus import _core
from ps_globus.errors import (
    ConsentRequired,
    IntegrityError,
    InvalidInput,
    LoginRequired,
    NeedsAttention,
    PsGlobusError,
    TransferFailed,
    WaitTimeout,
)
from ps_globus.refs import (
    Reference,
    import_reference,
    list_references,
    load_reference,
    remove_reference,
    save_reference,
)
from ps_globus.staging import TransferReport, stage_in, stage_out, transfer

__version__: str = _core.__version__


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
    # the interpreter is whole; what is left (a service that is down) the library's own
    # exit hook reports, naming the state database that keeps it.
    try:
        _core.flush_all()
    except BaseException:  # noqa: BLE001 - nothing may escape an exit hook
        pass


atexit.register(_flush_at_exit)

__all__ = [
    'ConsentRequired',
    'IntegrityError',
    'InvalidInput',
    'LoginRequired',
    'NeedsAttention',
    'PsGlobusError',
    'Reference',
    'TransferFailed',
    'TransferReport',
    'WaitTimeout',
    'flush',
    'import_reference',
    'list_references',
    'load_reference',
    'remove_reference',
    'save_reference',
    'stage_in',
    'stage_out',
    'transfer',
]

"""Library errors become ps_globus.errors classes, with their fields, and pickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from conftest import run_at
from ps_globus import _core
from ps_globus import errors as e
from ps_globus.testing import emulator

CASES = [
    ('TransferFailed', e.TransferFailed, {'code': 'FILE_NOT_FOUND', 'task_id': 'task-1', 'source_path': '/a/x'}),
    ('NeedsAttention', e.NeedsAttention, {'code': 'NEEDS_ATTENTION', 'task_id': 'task-2', 'hint': 'run `ps-globus login` (with `--collection <id>` for each collection involved); the task resumes by itself'}),
    ('Integrity', e.IntegrityError, {'path': '/b/x', 'found': '3 bytes, sha256 bb'}),
    ('ConsentRequired', e.ConsentRequired, {'collections': ['collection-1'], 'required_scopes': ['scope-1']}),
    ('AlreadySet', e.AlreadySet, {'kind': 'Conflict', 'what': 'the future f'}),
    ('ProducerGone', e.ProducerGone, {'what': 'the future f', 'reason': 'its producer failed'}),
    ('LeaseEnded', e.LeaseEnded, {'kind': 'NotFound', 'lease': 'lease-1'}),
    ('LoginRequired', e.LoginRequired, {'kind': 'PermissionDenied'}),
    ('Unauthorized', e.LoginRequired, {'kind': 'PermissionDenied'}),
    ('Timeout', e.WaitTimeout, {'kind': 'Timeout', 'transient': True}),
    ('MalformedKey', e.InvalidInput, {'kind': 'InvalidInput', 'transient': False}),
]


@pytest.mark.parametrize(('variant', 'cls', 'fields'), CASES, ids=[c[0] for c in CASES])
def test_each_library_error_becomes_its_class_with_its_fields_and_pickles(
    variant: str, cls: type, fields: dict
) -> None:
    with pytest.raises(cls) as raised:
        _core._raise_library_error(variant)
    error = raised.value
    assert type(error) is cls
    for name, value in fields.items():
        assert getattr(error, name) == value, name
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls and str(again) == str(error)
    assert all(getattr(again, name) == value for name, value in fields.items())


def test_the_classes_are_what_python_code_already_catches() -> None:
    assert issubclass(e.WaitTimeout, TimeoutError)
    assert issubclass(e.InvalidInput, ValueError)
    assert issubclass(e.ConsentRequired, e.LoginRequired)
    assert all(issubclass(c, e.PsGlobusError) for _, c, _ in CASES)
    with pytest.raises(e.ConsentRequired) as consent:
        _core._raise_library_error('ConsentRequired')
    assert 'ps-globus login --collection collection-1' in consent.value.hint


def test_a_wait_past_its_limit_raises_wait_timeout(tmp_path: Path) -> None:
    # Every task takes ten minutes; the store waits at most one second.
    with emulator(home=tmp_path / 'emu', task_latency_ms=600_000, https_max_size=0) as emu:
        produced = run_at(
            emu,
            'a',
            """
            from ps_globus.proxystore import GlobusConnector
            print(GlobusConnector('impatient', wait_timeout_s=1).put(b'late').key)
            """,
        )
        done = run_at(
            emu,
            'b',
            """
            import pickle, sys
            from ps_globus.proxystore import GlobusConnector, PsGlobusKey
            try:
                GlobusConnector('impatient', wait_timeout_s=1).get(PsGlobusKey(sys.stdin.read()))
            except TimeoutError as error:
                sys.stdout.buffer.write(pickle.dumps(error))
            """,
            stdin=produced.stdout.strip(),
        )
    error = pickle.loads(done.stdout)
    assert type(error) is e.WaitTimeout and error.kind == 'Timeout' and error.transient
    assert error.hint


def test_a_refused_service_identity_raises_login_required(tmp_path: Path) -> None:
    with emulator(home=tmp_path / 'emu', https_max_size=0) as emu:
        done = run_at(
            emu,
            'a',
            """
            import pickle, sys
            from ps_globus.proxystore import GlobusConnector
            from ps_globus.errors import PsGlobusError
            import ps_globus
            connector = GlobusConnector('refused')
            connector.put(b'x')  # committed here; submitting is what Globus refuses
            errors = []
            for flush in (connector.close, ps_globus.flush):
                try:
                    flush()
                except PsGlobusError as error:
                    errors.append(error)
            sys.stdout.buffer.write(pickle.dumps(errors))
            """,
            env={'PS_GLOBUS_CLIENT_SECRET': 'not-the-secret'},
        )
    errors = pickle.loads(done.stdout)
    assert len(errors) == 2, errors
    for error in errors:
        assert isinstance(error, e.LoginRequired), repr(error)
        assert 'not-the-secret' not in str(error)


def test_a_refused_access_token_from_the_environment_gets_the_clis_hint(tmp_path: Path) -> None:
    with emulator(home=tmp_path / 'emu', https_max_size=0) as emu:
        done = run_at(
            emu,
            'a',
            """
            import pickle, sys
            from ps_globus.proxystore import GlobusConnector
            from ps_globus.errors import PsGlobusError
            connector = GlobusConnector('refused-token')
            connector.put(b'x')
            try:
                connector.close()
            except PsGlobusError as error:
                sys.stdout.buffer.write(pickle.dumps(error))
            """,
            env={'PS_GLOBUS_ACCESS_TOKEN': 'expired-or-wrong'},
        )
    error = pickle.loads(done.stdout)
    assert isinstance(error, e.LoginRequired), repr(error)
    # Logging in would not help: the token in the environment is used as is.
    assert 'PS_GLOBUS_ACCESS_TOKEN' in error.hint and 'unset it' in error.hint, error.hint
    assert 'expired-or-wrong' not in str(error) + error.hint

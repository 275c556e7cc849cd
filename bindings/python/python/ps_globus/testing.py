"""The Globus emulator with sites, for tests of code that uses ps_globus (or ProxyStore
through it)::

    from ps_globus.testing import emulator

    def test_my_workflow(tmp_path):
        with emulator(sites=('hpc', 'lab'), home=tmp_path) as emu:
            emu.activate('hpc')                        # this process is at site hpc
            store = Store('t', GlobusConnector('run'))
            ...
            subprocess.run([...], env=emu.env('lab'))  # a consumer at site lab

Everything runs on loopback: Transfer and Auth on one port, collections as directories,
a service identity both sites act as.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ps_globus import _core

CLIENT_ID = 'a0a0a0a0-0000-4000-8000-00000000beef'
CLIENT_SECRET = 'ps-globus-testing-secret'

_ENV_KEYS = (
    'PS_GLOBUS_CONFIG',
    'PS_GLOBUS_HOME',
    'PS_GLOBUS_SITE',
    'PS_GLOBUS_CLIENT_ID',
    'PS_GLOBUS_CLIENT_SECRET',
    'PS_GLOBUS_AUTH_URL',
    'PS_GLOBUS_TRANSFER_URL',
    'PS_GLOBUS_TOKEN_STORE',
    'PS_GLOBUS_ACCESS_TOKEN',
)


def _toml_string(text: str) -> str:
    # A JSON string is a valid TOML basic string.
    return json.dumps(text)


class Emulator:
    """A running emulator and the configuration of its sites (see :func:`emulator`)."""

    def __init__(self, core: Any, directory: Path, sites: dict[str, dict[str, str]]) -> None:
        self._core = core
        self.directory = directory
        self.sites = sites
        """``{name: {"collection", "collection_path", "local_path"}}`` (and
        ``https_max_size`` where set), as ps-globus reads them."""
        self.transfer_url: str = core.transfer_url
        self.auth_url: str = core.auth_url
        self.config_path = directory / 'config.toml'
        lines = []
        for name, site in sites.items():
            lines.append(f'[sites.{_toml_string(name)}]')
            lines.extend(
                f'{k} = {v}' if isinstance(v, int) else f'{k} = {_toml_string(v)}'
                for k, v in site.items()
            )
            lines.append('')
        self.config_path.write_text('\n'.join(lines))
        self._saved_env: dict[str, str | None] | None = None

    def home(self, site: str) -> Path:
        """The state directory of ``site``'s processes."""
        return self.directory / f'home-{site}'

    def env(self, site: str) -> dict[str, str]:
        """The environment variables of a process at ``site`` (merge into
        ``os.environ.copy()`` for a subprocess)."""
        if site not in self.sites:
            raise KeyError(f'{site!r} is not a site of this emulator: {sorted(self.sites)}')
        return {
            'PS_GLOBUS_CONFIG': str(self.config_path),
            'PS_GLOBUS_HOME': str(self.home(site)),
            'PS_GLOBUS_SITE': site,
            'PS_GLOBUS_CLIENT_ID': CLIENT_ID,
            'PS_GLOBUS_CLIENT_SECRET': CLIENT_SECRET,
            'PS_GLOBUS_AUTH_URL': self.auth_url,
            'PS_GLOBUS_TRANSFER_URL': self.transfer_url,
        }

    def activate(self, site: str) -> None:
        """Makes this process a process at ``site`` (sets ``os.environ``; restored when
        the emulator stops). Connectors read it when they are built."""
        if self._saved_env is None:
            self._saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        for k in _ENV_KEYS:
            os.environ.pop(k, None)
        os.environ.update(self.env(site))

    def stats(self) -> dict[str, Any]:
        """The emulator's counters: ``api_requests``, ``by_route``, ``tasks_submitted``,
        ``tasks_finished``, ..."""
        return json.loads(self._core.stats_json())

    def transfer_tasks(self) -> int:
        """How many transfer tasks were submitted so far."""
        return self.stats()['tasks_submitted'].get('TRANSFER', 0)

    def stop(self) -> None:
        """Stops the emulator and restores the environment ``activate`` changed."""
        self._core.shutdown()
        if self._saved_env is not None:
            for k, v in self._saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self._saved_env = None


@contextmanager
def emulator(
    sites: Sequence[str] = ('a', 'b'),
    *,
    home: str | os.PathLike[str] | None = None,
    task_latency_ms: int = 0,
    rate_limit: int | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    https_max_size: int | None = None,
    **config: Any,
) -> Iterator[Emulator]:
    """Runs the emulator with one collection per site, in ``home`` (default: a temporary
    directory, removed at the end).

    ``faults`` are the emulator's injected faults, e.g. ``{"kind": "checksum_mismatch",
    "path": "/store/*"}`` or ``{"kind": "http_503", "probability": 0.1}``; other keyword
    arguments are further emulator settings (``bandwidth="100MB/s"``, ``seed=...``).
    Every collection serves HTTPS, so objects up to 4 MiB go by it (the lane); a site's
    ``https_max_size`` (``0``: always Transfer) is written when given, for tests of the
    Transfer path.
    """
    if not sites:
        raise ValueError('an emulator needs at least one site')
    owned = home is None
    directory = Path(tempfile.mkdtemp(prefix='ps-globus-emulator-')) if owned else Path(home)
    directory = directory.resolve()
    try:
        collections = {}
        for name in sites:
            root = directory / f'site-{name}'
            root.mkdir(parents=True, exist_ok=True)
            collections[name] = {'root': str(root)}
        sim_config = {
            'collections': collections,
            'clients': {CLIENT_ID: CLIENT_SECRET},
            'task_latency_ms': task_latency_ms,
            'faults': list(faults),
            **config,
        }
        if rate_limit is not None:
            # Absent: Globus's own limit (about 20 requests a second), as strict as it is.
            sim_config['rate_limit'] = rate_limit
        core = _core.Emulator(json.dumps(sim_config))
        served = json.loads(core.collections_json())
        site_configs = {
            name: {
                'collection': served[name]['id'],
                'collection_path': '/',
                'local_path': served[name]['root'],
                **({} if https_max_size is None else {'https_max_size': https_max_size}),
            }
            for name in sites
        }
        emu = Emulator(core, directory, site_configs)
        try:
            yield emu
        finally:
            emu.stop()
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)


class RunningEndpoint:
    """An endpoint served from this process (see :func:`endpoint`)."""

    def __init__(self, core: _core.Endpoint, home: Path) -> None:
        self._core = core
        #: Its id: what ``EndpointConnector([uuid])`` names.
        self.uuid: str = core.uuid
        #: Its ``PROXYSTORE_HOME`` (pass it as ``proxystore_dir``, or set the variable).
        self.home: Path = home

    def stop(self) -> None:
        """Stops serving; its objects stay in its directory."""
        self._core.stop()


@contextmanager
def endpoint(
    name: str = 'endpoint',
    *,
    home: str | os.PathLike[str] | None = None,
    max_object_size: int | None = None,
) -> Iterator[RunningEndpoint]:
    """Serves endpoint ``name`` of ``home`` (default: a temporary directory, removed at
    the end) from this process, configuring it first if needed: what ProxyStore's
    ``EndpointConnector`` and ours use in a test, without ``ps-globus endpoint start``."""
    owned = home is None
    directory = Path(tempfile.mkdtemp(prefix='ps-globus-endpoints-')) if owned else Path(home)
    directory = directory.resolve()
    try:
        running = RunningEndpoint(
            _core.Endpoint(str(directory), name, max_object_size), directory
        )
        try:
            yield running
        finally:
            running.stop()
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)


__all__ = ['CLIENT_ID', 'CLIENT_SECRET', 'Emulator', 'RunningEndpoint', 'emulator', 'endpoint']

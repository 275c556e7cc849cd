"""Named references: a name for a stored object, kept in the state database and shared
with ``ps-globus ref`` (``list``, ``resolve``, ``export``/``import`` across sites)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ps_globus import _core
from ps_globus.errors import NotFound


@dataclass(frozen=True)
class Reference:
    """A saved reference: its name, the store it lives in, and the object's key."""

    name: str
    store: dict[str, Any]
    """The ps-globus store configuration (``{"v", "name", "connector": {"kind", "options"}}``)."""
    key: str
    """The object's key as compact JSON."""

    def connector(self) -> Any:
        """A connector (rebuilt in this process) holding the object."""
        from ps_globus.proxystore import FileConnector, GlobusConnector

        spec = self.store['connector']
        options = spec.get('options', {})
        if spec['kind'] == 'globus':
            return GlobusConnector(**options)
        if spec['kind'] == 'file':
            return FileConnector(options['dir'])
        raise NotFound(f'no Python connector for kind {spec["kind"]!r}', kind='NotFound')

    def get(self) -> bytes | None:
        """The object's bytes, waiting for them to arrive at this site."""
        from ps_globus.proxystore import PsGlobusKey

        return self.connector().get(PsGlobusKey(self.key))

    def resolve_path(self) -> str:
        """The verified local file holding the object at this site."""
        from ps_globus.proxystore import PsGlobusKey

        return self.connector().resolve_path(PsGlobusKey(self.key))

    def to_string(self) -> str:
        """The string form (``ps-globus ref import`` takes it at another site)."""
        return _core.ref_string_form(json.dumps(self._raw()))

    def _raw(self) -> dict[str, Any]:
        return {'v': 1, 'name': self.name, 'store': self.store, 'key': json.loads(self.key)}


def _from_json(text: str) -> Reference:
    raw = json.loads(text)
    return Reference(
        name=raw['name'],
        store=raw['store'],
        key=json.dumps(raw['key'], separators=(',', ':')),
    )


def save_reference(
    name: str,
    key: Any,
    connector: Any,
    *,
    store_name: str | None = None,
    replace: bool = False,
) -> str:
    """Saves ``name`` for the object ``key`` of ``connector`` (a ps_globus connector, or a
    ProxyStore ``Store`` on one); returns the string form to hand to another site. A name
    already taken is :class:`~ps_globus.errors.Conflict` unless ``replace``."""
    from ps_globus.proxystore import RustConnector, _key_text

    store_label = store_name
    if not isinstance(connector, RustConnector):
        store_label = store_label or getattr(connector, 'name', None)
        connector = connector.connector
    if not isinstance(connector, RustConnector):
        raise TypeError('save_reference needs a ps_globus connector (or a Store on one)')
    config = connector.store_config(store_label or f'python-{connector.kind}')
    return _core.ref_save(name, json.dumps(config), _key_text(key), replace)


def load_reference(name: str) -> Reference:
    """The reference ``name``; :class:`~ps_globus.errors.NotFound` if there is none."""
    text = _core.ref_load(name)
    if text is None:
        raise NotFound(
            f'no reference named {name!r}',
            kind='NotFound',
            hint='see list_references() or `ps-globus ref list`',
        )
    return _from_json(text)


def list_references() -> list[Reference]:
    """Every saved reference, by name."""
    return [_from_json(t) for t in _core.ref_list()]


def remove_reference(name: str) -> bool:
    """Removes ``name``; whether it existed."""
    return _core.ref_remove(name)


def import_reference(text: str, name: str | None = None, *, replace: bool = False) -> Reference:
    """Saves a reference from its string form (made at another site), under ``name`` if
    given."""
    return _from_json(_core.ref_import(text, name, replace))


__all__ = [
    'Reference',
    'import_reference',
    'list_references',
    'load_reference',
    'remove_reference',
    'save_reference',
]

"""Futures that can say "no value is coming": ProxyStore's ``Future`` plus ``abandon``.

ProxyStore's ``Store.future()`` works on every deferrable ps_globus connector as it is.
What its ``Future`` cannot do is tell the waiting consumers that the producer failed:
they poll until ``polling_timeout``. :func:`future` returns a subclass that can::

    with ps_globus.future(store, polling_timeout=600) as fut:
        submit(consumer, fut.proxy())
        fut.set_result(produce())     # an exception here abandons the future

A consumer of an abandoned future raises :class:`~ps_globus.errors.ProducerGone` at its
next poll, naming the reason. Only leaving the ``with`` block (or :meth:`Future.abandon`)
abandons: a copy of the future that is pickled to a worker and collected there never
does.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

from proxystore.store.future import Future as ProxyStoreFuture

from ps_globus.errors import AlreadySet
from ps_globus.proxystore import DeferrableRustConnector

T = TypeVar('T')


class Future(ProxyStoreFuture[T]):
    """A ProxyStore ``Future`` on a ps_globus connector, which its producer can
    :meth:`abandon`; as a context manager, it abandons when the block ends without a
    result (an exception, or an early return)."""

    _result_set = False

    def set_result(self, obj: T) -> None:
        """Sets the result, once; a second set raises
        :class:`~ps_globus.errors.AlreadySet` and changes nothing."""
        super().set_result(obj)
        self._result_set = True

    def abandon(self, reason: str) -> None:
        """Tells every consumer that no result is coming: their resolve raises
        :class:`~ps_globus.errors.ProducerGone` with ``reason``. A future already set
        keeps its result (:class:`~ps_globus.errors.AlreadySet`)."""
        factory = self._factory
        connector = factory.get_store().connector
        connector.abandon(factory.key, reason)

    def __enter__(self) -> Future[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._result_set:
            return
        if exc is None:
            reason = 'its producer left the with-block without setting it'
        else:
            reason = f'its producer failed: {type(exc).__name__}: {exc}'
        try:
            self.abandon(reason)
        except AlreadySet:
            # Another copy of this future (a retried task) set it: the value stands.
            pass


def future(store: Any, **options: Any) -> Future[Any]:
    """A future on ``store`` (a ProxyStore ``Store`` over a deferrable ps_globus
    connector): ``store.future(**options)``, as a :class:`Future` that can be
    abandoned. ``options`` are ``Store.future``'s (``polling_timeout``, ``evict``,
    ``serializer``, ...)."""
    if not isinstance(store.connector, DeferrableRustConnector):
        raise TypeError(
            f'ps_globus.future needs a store on a ps_globus connector with futures '
            f'(file, Redis, Globus, multi), not {type(store.connector).__name__}: use '
            'store.future() for other connectors'
        )
    plain = store.future(**options)
    return Future(plain._factory, serializer=options.get('serializer'))


__all__ = ['Future', 'future']

"""The one ``with`` protocol of the objects that end with ``close()``, written once instead
of an ``__enter__``/``__exit__`` pair in each class: :class:`Closing` hands the object itself
to the ``with`` block and closes it at the end (a client, a subscription); :class:`Service`
starts it first (a server process, a Redis topology) and closes it at the end, or at once if
the start itself fails half-way, so nothing it started is left behind. No state, nothing of
ours imported: any layer may use it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Closing", "Service"]


class Closing(ABC):
    """``with obj:`` … ``obj.close()`` at the end, however the block ends."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Service(Closing):
    """``with obj:`` starts it (the block gets what ``start()`` returns) and closes it at
    the end; a start that raises closes what it began and re-raises."""

    @abstractmethod
    def start(self) -> Self: ...

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

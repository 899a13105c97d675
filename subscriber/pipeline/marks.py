"""What a node saw Redis hold of an instance's order, and whether Redis lost it since.

Two marks say whether Redis still holds what the fleet decided: the ``:epoch`` token (set by
the first node's restore, never changed while Redis keeps its data) and the ``:version``
counter (it only grows, unless Redis lost it). Redis can lose them with no reconnect to say
so: a restart without persistence is a reconnect, but ``FLUSHALL`` or keys evicted under
``maxmemory`` happen under a node that stays subscribed. :class:`RedisMarks` keeps what the
node last saw, from three readers:

- the **restore** of each (re)connect (``recorder.py``): the token Redis holds now, and the
  counter raised to what the node applied (:meth:`RedisMarks.restored`);
- the **catch-up** of each (re)connect (``listener.py``): a loss if the token is gone or
  another, or if the counter reads below what the node saw Redis hold
  (:meth:`RedisMarks.caught_up`);
- each **heartbeat** (``registry.py`` reads the first ``EPOCH_BYTES`` of both in its round
  trip): the same, with the counter's drop seen on two beats running (a beat's reply may be
  older than the catch-up's read; a real LRU eviction keeps the token, which these reads keep
  in use, and drops the counter) (:meth:`RedisMarks.beat`).

Only what Redis was seen to hold counts, never the version the node serves: a raw message
targeted at the node, or an unversioned one whose record did not raise the counter, is served
above a counter nothing raised, which is no loss.

After a loss, a message the node judged stale by its number alone since Redis last held its
marks intact may have been numbered by the counter that restarted: ``again_since`` says from
when such judgments are judged again (``listener.py``'s ``_handle``; unsigned fleets only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["RedisMarks", "parse_marks"]


@dataclass(eq=False)
class RedisMarks:
    """The marks one instance's listener saw Redis hold; ``epoch_key`` and ``version_key``
    name them in what a loss says."""

    epoch_key: str
    version_key: str
    epoch: str = ""  # the :epoch token Redis held when this node last restored
    # when (monotonic) Redis was last seen holding that token: a loss came after it, so only a
    # message judged since can have been numbered by the counter that restarted
    intact_at: float = 0.0
    # the :version counter as this node last saw Redis hold it (the catch-up's read, what its
    # restore raised it to, heartbeats' reads since): it only grows, unless Redis lost it
    counter: int = 0
    low_beats: int = 0  # heartbeats running that read :version below ``counter``
    adopt_next: bool = False  # the next catch-up reads :latest as after a loss
    loss_read_at: float = 0.0  # when the last catch-up that found a loss began
    # judgments stale by their number since then are judged again (``_handle``)
    again_since: float = 0.0

    def beat(self, epoch: str, counter: int, asked_at: float) -> str:
        """A heartbeat read ``epoch`` and ``counter`` in a round trip sent at ``asked_at``
        (monotonic): the loss they show (``""``: none yet). The caller acts on a loss only
        while subscribed, then calls :meth:`acted`."""
        low = counter < self.counter
        self.low_beats = self.low_beats + 1 if low else 0
        if not low:
            self.counter = counter
        known = self.epoch
        if known and epoch == known and not low:
            self.intact_at = max(self.intact_at, asked_at)
        if known and epoch != known:
            return f"{self.epoch_key} is {'another' if epoch else 'gone'}"
        if self.low_beats >= 2:
            return f"{self.version_key} reads {counter}, below {self.counter}"
        return ""

    def acted(self) -> None:
        """The loss :meth:`beat` found is being caught up: count the counter's drop anew."""
        self.low_beats = 0

    def restored(self, epoch: str, asked_at: float, applied: int) -> None:
        """The restore sent at ``asked_at`` found the token ``epoch`` (``""``: it could not
        tell) and raised the counter to ``applied`` if it was below."""
        if epoch:
            self.epoch, self.intact_at = epoch, asked_at
            self.counter = max(self.counter, applied)

    def caught_up(self, epoch: str, counter: int) -> tuple[str, bool]:
        """The catch-up read ``epoch`` and ``counter``: the loss they show (``""``: none) and
        whether :meth:`look_again` asked this catch-up to read ``:latest`` as after a loss.
        The heartbeat compares its reads with ``counter`` from now on."""
        seen, self.counter = self.counter, counter
        loss = ""
        if self.epoch and epoch != self.epoch:
            loss = f"{self.epoch_key} is {'another' if epoch else 'gone'}"
        elif counter < seen:
            loss = f"{self.version_key} reads {counter}, below {seen} as this node saw it"
        adopt, self.adopt_next = self.adopt_next, False
        # which stale-by-number judgments :latest may be judged again against: after a loss,
        # those since Redis last held the token and counter intact; asked to look again (a
        # publication moved :latest after a loss's catch-up read it), those since that
        # catch-up
        if loss:
            self.again_since, self.loss_read_at = self.intact_at, time.monotonic()
        elif adopt:
            self.again_since = self.loss_read_at
        return loss, adopt

    def look_again(self) -> None:
        """The next catch-up reads ``:latest`` as after a loss."""
        self.adopt_next = True


def parse_marks(raw_epoch: object, raw_counter: object) -> tuple[str, int]:
    """``:epoch``'s token and ``:version``'s counter from what Redis answered (nothing, or not
    a decimal counter: ``""`` and 0)."""
    epoch = raw_epoch.decode(errors="replace") if isinstance(raw_epoch, bytes) else ""
    counter = int(raw_counter) if isinstance(raw_counter, bytes) and raw_counter.isdigit() else 0
    return epoch, counter

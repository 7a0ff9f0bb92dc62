"""Collect each channel's messages across chunk groups into batches worth one decoder call.

Recorders interleave every channel in time-ordered chunks, so a group of chunks gives a channel
of small messages (IMU, CAN, poses) only a few hundred of them. A decoder call has a fixed cost
(checking programs and layouts, assembling Arrow columns) that would then outweigh the work on
the messages. :class:`ChannelBatcher` keeps such a channel's payloads, copied out of the group's
buffer (cheap: they are small), until the channel has enough of them; a channel with enough
messages or bytes in one group is passed on without a copy. Each channel's messages keep their
order; channels are interleaved in the order their batches fill.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from nuro_ml.etl.mcap_io import MessageBatch, concat_batches

#: A channel is decoded once it has this many messages or payload bytes collected.
MIN_MESSAGES = 8192
MIN_BYTES = 1 << 20
#: Payload bytes held for all channels together before every channel is passed on.
MAX_HELD_BYTES = 32 << 20


@dataclass
class _Held:
    batches: list[MessageBatch] = field(default_factory=list)
    where: list[np.ndarray] = field(default_factory=list)
    messages: int = 0
    nbytes: int = 0


class ChannelBatcher:
    """Split batches of mixed channels into per-channel batches of at least ``min_messages``
    messages or ``min_bytes`` payload bytes (fewer only at :meth:`flush`).

    :param min_messages: messages of one channel worth a decoder call (default :data:`MIN_MESSAGES`).
    :param min_bytes: payload bytes of one channel worth a decoder call (default :data:`MIN_BYTES`).
    :param max_held_bytes: payload bytes held for all channels before all are passed on (default
        :data:`MAX_HELD_BYTES`).
    """

    def __init__(
        self,
        *,
        min_messages: int | None = None,
        min_bytes: int | None = None,
        max_held_bytes: int | None = None,
    ) -> None:
        self.min_messages = MIN_MESSAGES if min_messages is None else min_messages
        self.min_bytes = MIN_BYTES if min_bytes is None else min_bytes
        self.max_held_bytes = MAX_HELD_BYTES if max_held_bytes is None else max_held_bytes
        self._held: dict[int, _Held] = {}
        self._held_bytes = 0

    def add(self, batch: MessageBatch, where: np.ndarray) -> Iterator[tuple[int, MessageBatch, np.ndarray]]:
        """The channel batches that are full after adding ``batch``: ``(channel id, batch, where)``.

        ``where[i]`` (any per-message value, e.g. the file offset of the chunk holding message
        ``i``) travels with each message.
        """
        n = len(batch)
        if not n:
            return
        ids = batch.channel_ids
        first = int(ids[0])
        if (ids == first).all():
            parts = [(first, batch, where)]
        else:
            order = np.argsort(ids, kind="stable")
            sorted_ids = ids[order]
            cuts = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
            bounds = [0, *cuts.tolist(), n]
            parts = [
                (int(sorted_ids[a]), batch.select(order[a:b]), where[order[a:b]])
                for a, b in itertools.pairwise(bounds)
            ]
        for cid, sub, at in parts:
            size = sub.payload_bytes()
            held = self._held.get(cid)
            if held is None and (len(sub) >= self.min_messages or size >= self.min_bytes):
                yield cid, sub, at  # enough on its own: no copy
                continue
            if held is None:
                held = self._held[cid] = _Held()
            # A copy of the payloads only, so that the group's buffer is not kept alive.
            held.batches.append(sub.compact())
            held.where.append(at)
            held.messages += len(sub)
            held.nbytes += size
            self._held_bytes += size
            if held.messages >= self.min_messages or held.nbytes >= self.min_bytes:
                yield self._take(cid)
        if self._held_bytes > self.max_held_bytes:
            yield from self.flush()

    def flush(self) -> Iterator[tuple[int, MessageBatch, np.ndarray]]:
        """Every channel's held messages."""
        for cid in list(self._held):
            yield self._take(cid)

    def _take(self, cid: int) -> tuple[int, MessageBatch, np.ndarray]:
        held = self._held.pop(cid)
        self._held_bytes -= held.nbytes
        where = held.where[0] if len(held.where) == 1 else np.concatenate(held.where)
        return cid, concat_batches(held.batches), where

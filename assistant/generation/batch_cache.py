"""The batch's key/value cache (:mod:`assistant.generation.batch`).

Each layer keeps its keys and values in buffers larger than what they hold: rows ``[0, rows)``
are the batch's rows, and positions ``[begin, end)`` its tokens, every row right-aligned at
``end`` (a shorter row is left-padded, and the attention mask hides the padding). So:

- a step writes its token in place, instead of copying the cache to append it (transformers'
  ``DynamicLayer`` concatenates);
- a new row writes its own slot: its prompt goes right-aligned, and when it is longer than the
  batch, ``begin`` moves left over room kept there;
- rows that leave are replaced by the last rows (:func:`leaving_order`), and positions that
  only they used are dropped by moving ``begin`` right.

Only the rows and positions that move are copied, and the buffers whole only when they run out
of room. Before, every join and every leave copied the whole cache: with 16 rows of
1,200-token prompts, 13 s of a 63-s run, a fifth of the model's time. ``bench/results/
batching.md`` has the model's throughput before and after, ``bench/results/load.md`` the
server's.

Padding is always zeros: buffers start as zeros, and positions that show again and a reused
slot's padding are zeroed when a row joins. Masked positions then weigh exactly 0 in attention;
a value a former row left there (NaN, after an overflow) would spoil the new row, as
0 × NaN is NaN.
"""

from __future__ import annotations

import functools

from transformers.cache_utils import Cache, DynamicLayer


def _room(positions: int) -> int:
    """Positions kept spare beside ``positions``: a quarter more, and 64."""
    return positions // 4 + 64


def leaving_order(rows: int, done: list[int]) -> list[int]:
    """The rows that stay when ``done`` leave a batch of ``rows``, in their new slot order:
    each hole left among the first slots is filled by one of the last rows, so only those move.
    """
    gone = set(done)
    size = rows - len(gone)
    movers = iter(i for i in range(size, rows) if i not in gone)
    return [next(movers) if i in gone else i for i in range(size)]


class Layer(DynamicLayer):
    """One layer's keys and values, in buffers with room kept around them (see the module);
    room for at most ``max_rows`` rows (0: no limit)."""

    def __init__(self, max_rows: int = 0) -> None:
        super().__init__()
        self.max_rows = max_rows

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = self.values = None
        self.rows = self.begin = self.end = 0
        self.is_initialized = True

    @property
    def length(self) -> int:
        return self.end - self.begin

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows, _, n, _ = key_states.shape
        if self.keys is None:
            # Keys and values each keep their own width: some models' values are narrower.
            self.shapes = {"keys": key_states.shape[1::2], "values": value_states.shape[1::2]}
            self._reserve(rows, left=0, right=n)
        elif rows != self.rows:
            raise ValueError(f"The cache holds {self.rows} rows; a step gave {rows}.")
        elif self.end + n > self.keys.shape[2]:  # keeping the room for rows and longer prompts
            self._reserve(self.keys.shape[0], left=_room(self.length), right=n)
        self.rows = rows
        self.keys[:rows, :, self.end : self.end + n] = key_states
        self.values[:rows, :, self.end : self.end + n] = value_states
        self.end += n
        return self.keys[:rows, :, self.begin : self.end], self.values[:rows, :, self.begin : self.end]

    def _reserve(self, rows: int, left: int, right: int) -> None:
        """New buffers for ``rows`` rows, with ``left`` positions before what is held and
        ``right`` after it, and a quarter more after; what is held is copied."""
        import torch

        room = _room(self.length + right)
        for name in ("keys", "values"):
            heads, dim = self.shapes[name]
            size = (rows, heads, left + self.length + right + room, dim)
            buffer = torch.zeros(size, dtype=self.dtype, device=self.device)
            held = getattr(self, name)
            if held is not None:
                buffer[: self.rows, :, left : left + self.length] = held[
                    : self.rows, :, self.begin : self.end
                ]
            setattr(self, name, buffer)
        self.begin, self.end = left, left + self.length

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def join(self, other: Layer, width: int) -> None:
        """Add ``other``'s single row as the last; every row is right-aligned to ``width``
        positions (at least this layer's and ``other``'s length)."""
        left = width - self.length
        full = self.rows == self.keys.shape[0]
        if full or left > self.begin:
            # Room for as many rows again (up to the batch's), and for prompts a quarter longer.
            rows = self.keys.shape[0] * (2 if full else 1)
            rows = max(self.rows + 1, min(rows, self.max_rows or rows))
            self._reserve(rows, left=left + _room(self.length), right=0)
        begin, self.begin = self.begin, self.begin - left
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            # Positions that show again, and the new row's padding, may hold what a row that
            # left once held (NaN, even): they become zeros, so that masking them is exact.
            mine[: self.rows, :, self.begin : begin] = 0
            mine[self.rows, :, self.begin : self.end - other.length] = 0
            mine[self.rows, :, self.end - other.length : self.end] = theirs[0, :, other.begin : other.end]
        self.rows += 1

    def keep(self, order: list[int], start: int) -> None:
        """Keep the rows ``order`` names (:func:`leaving_order`), in that order, and only the
        positions from ``start`` on."""
        for slot, row in enumerate(order):
            if slot != row:
                for held in (self.keys, self.values):
                    held[slot, :, self.begin : self.end] = held[row, :, self.begin : self.end]
        self.rows = len(order)
        self.begin += start

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError(
            "The batch cache changes its rows only through join and keep; transformers' "
            "DynamicLayer operations would read its buffers as if they held nothing else."
        )

    # What DynamicLayer does to its tensors whole (crop, beam-search reordering, reset) would
    # act on the spare room as well: refused rather than silently wrong. The batcher uses none.
    crop = batch_repeat_interleave = batch_select_indices = reorder_cache = reset = _unsupported
    offload = prefetch = _unsupported


def new_cache(max_rows: int = 0) -> Cache:
    """A cache whose layers keep room for at most ``max_rows`` rows (0: no limit)."""
    return Cache(layer_class_to_replicate=functools.partial(Layer, max_rows))

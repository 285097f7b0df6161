"""The batch's key/value cache: one layer's rows kept with room ahead, so that a step writes
its token in place, a new row joins right-aligned, and finished rows leave
(:mod:`assistant.generation.batch`)."""

from __future__ import annotations

from transformers.cache_utils import Cache, DynamicLayer


class Layer(DynamicLayer):
    """One layer's keys and values with room kept ahead: a step writes its token in place
    instead of copying the whole cache to append it (``DynamicLayer`` concatenates)."""

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = self.values = None
        self.length = 0
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.keys is None or self.length + n > self.keys.shape[-2]:
            self._reserve(key_states.shape[0], key_states.shape[1], key_states.shape[-1], self.length + n)
        self.keys[:, :, self.length : self.length + n] = key_states
        self.values[:, :, self.length : self.length + n] = value_states
        self.length += n
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def _reserve(self, rows: int, heads: int, dim: int, needed: int) -> None:
        import torch

        size = (rows, heads, needed + needed // 4 + 64, dim)
        keys = torch.zeros(size, dtype=self.dtype, device=self.device)
        values = torch.zeros(size, dtype=self.dtype, device=self.device)
        if self.keys is not None:
            keys[:, :, : self.length] = self.keys[:, :, : self.length]
            values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = keys, values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def join(self, other: Layer, width: int) -> None:
        """Append ``other``'s single row; both are right-aligned to ``width`` positions."""
        import torch

        rows, heads, _, dim = self.keys.shape
        size = (rows + 1, heads, width + 64, dim)
        for name in ("keys", "values"):
            mine, theirs = getattr(self, name), getattr(other, name)
            joined = torch.zeros(size, dtype=mine.dtype, device=mine.device)
            joined[:rows, :, width - self.length : width] = mine[:, :, : self.length]
            joined[rows, :, width - other.length : width] = theirs[0, :, : other.length]
            setattr(self, name, joined)
        self.length = width

    def keep(self, rows: list[int], start: int) -> None:
        """Keep only ``rows``, and only the positions from ``start`` on."""
        self.keys = self.keys[rows, :, start:]
        self.values = self.values[rows, :, start:]
        self.length -= start


def new_cache() -> Cache:
    return Cache(layer_class_to_replicate=Layer)

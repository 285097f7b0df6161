"""The batch's key/value cache keeps every row's tokens, right-aligned, through rows joining
(shorter and longer than the batch, past the rows it has room for), steps, and rows leaving
from the middle, while it copies only what moves."""

from __future__ import annotations

import random

import torch

from assistant.generation.batch_cache import Layer, leaving_order

HEADS, DIM = 2, 3


def states(rows: int, n: int) -> torch.Tensor:
    return torch.randn(rows, HEADS, n, DIM)


class Reference:
    """What the cache must hold: each row's keys, token by token, with nothing shared."""

    def __init__(self, max_rows: int = 0) -> None:
        self.max_rows = max_rows
        self.layer = Layer(max_rows)
        self.rows: list[list[torch.Tensor]] = []

    def check(self) -> None:
        held = self.layer.keys[: self.layer.rows, :, self.layer.begin : self.layer.end]
        values = self.layer.values[: self.layer.rows, :, self.layer.begin : self.layer.end]
        assert held.shape[0] == len(self.rows)
        width = held.shape[2]
        for n, tokens in enumerate(self.rows):
            expected = torch.stack(tokens, dim=1)  # heads, tokens, dim
            assert torch.equal(held[n, :, width - len(tokens) :], expected)
            assert torch.equal(values[n, :, width - len(tokens) :], -expected)
        # The padding attention masks out must be finite: 0 x NaN would spoil the row.
        assert torch.isfinite(held).all() and torch.isfinite(values).all()

    def join(self, length: int) -> None:
        prompt = Layer(self.max_rows)
        keys = states(1, length)
        prompt.update(keys, -keys)
        if not self.rows:
            self.layer = prompt
        else:
            self.layer.join(prompt, max(self.layer.length, length))
        self.rows.append([keys[0, :, i] for i in range(length)])

    def step(self) -> None:
        keys = states(len(self.rows), 1)
        returned, _ = self.layer.update(keys, -keys)
        assert returned.shape[2] == self.layer.length
        for n, tokens in enumerate(self.rows):
            tokens.append(keys[n, :, 0])

    def leave(self, done: list[int]) -> None:
        order = leaving_order(len(self.rows), done)
        if not order:  # the batcher drops an empty batch's cache
            self.__init__(self.max_rows)
            return
        width = self.layer.length
        start = min(width - len(self.rows[i]) for i in order)
        self.layer.keep(order, start)
        self.rows = [self.rows[i] for i in order]
        assert self.layer.length == max(len(tokens) for tokens in self.rows)  # nobody's columns kept


def test_rows_keep_their_tokens_as_rows_join_step_and_leave():
    torch.manual_seed(0)
    cache = Reference()
    cache.join(5)
    cache.step()
    cache.join(9)  # longer than the batch: positions open on the left
    cache.check()
    cache.join(3)  # shorter: right-aligned in its own slot
    for _ in range(3):
        cache.step()
    cache.check()
    cache.leave([1])  # the longest row leaves from the middle: the last row takes its slot
    cache.check()
    assert cache.layer.length == 9  # positions only the row that left used are dropped
    for length in (4, 30, 2, 7, 12):  # past the rows there is room for, and much longer
        cache.join(length)
        cache.step()
        cache.check()
    cache.leave([0, 2, 5])
    cache.check()
    for _ in range(200):  # past the room kept after the tokens
        cache.step()
    cache.check()


def test_random_joins_steps_and_leaves_match_the_reference():
    rng = random.Random(1)
    torch.manual_seed(1)
    cache = Reference(max_rows=12)
    for _ in range(300):
        action = rng.random()
        if not cache.rows or (action < 0.3 and len(cache.rows) < 12):
            cache.join(rng.randint(1, 40))
        elif action < 0.45:
            cache.leave(rng.sample(range(len(cache.rows)), rng.randint(1, len(cache.rows))))
        else:
            cache.step()
        if cache.rows:
            cache.check()
            assert cache.layer.keys.shape[0] <= 12  # room for no more rows than the batch has


def test_what_a_row_that_left_held_never_reaches_a_new_row():
    """Rows whose keys overflowed (NaN) leave; a shorter prompt takes a free slot and a longer
    one opens positions on the left. Their padding is masked, but 0 x NaN is NaN: it must be
    zeros, not what the row before left there."""
    torch.manual_seed(2)
    cache = Reference()
    for length in (6, 8, 7):
        cache.join(length)
    cache.leave([1])  # the last row takes slot 1
    # Say the rows before held NaN wherever nothing holds a row's tokens now: in the free slots
    # and in the positions before ``begin``.
    layer = cache.layer
    for held in (layer.keys, layer.values):
        held[layer.rows :] = float("nan")
        held[:, :, : layer.begin] = float("nan")
    cache.join(2)  # into a NaN slot, right-aligned: five positions of padding
    cache.check()
    cache.join(cache.layer.length + 3)  # longer: positions before ``begin`` show again
    cache.check()


def test_only_the_rows_that_move_are_copied_when_rows_leave():
    assert leaving_order(6, [1, 4]) == [0, 5, 2, 3]  # slot 1 takes row 5; rows 0, 2, 3 stay put
    assert leaving_order(4, [3]) == [0, 1, 2]
    assert leaving_order(3, [0, 1, 2]) == []


def test_values_narrower_than_keys_keep_their_own_width():
    """Some models' values are narrower than their keys: each buffer keeps its own width
    through joins (past the row room), steps and leaves."""
    layer = Layer()
    keys, values = torch.randn(1, HEADS, 4, 5), torch.randn(1, HEADS, 4, 2)
    layer.update(keys, values)
    for length in (3, 7):  # shorter, then longer than the batch
        prompt = Layer()
        prompt.update(torch.randn(1, HEADS, length, 5), torch.randn(1, HEADS, length, 2))
        layer.join(prompt, max(layer.length, length))
    step_keys, step_values = layer.update(torch.randn(3, HEADS, 1, 5), torch.randn(3, HEADS, 1, 2))
    assert step_keys.shape == (3, HEADS, 8, 5) and step_values.shape == (3, HEADS, 8, 2)
    # The first row's values: its prompt, right-aligned after the longer row's padding.
    assert torch.equal(step_values[0, :, 3:7], values[0])
    layer.keep(leaving_order(3, [0]), 0)
    assert layer.values[: layer.rows, :, layer.begin : layer.end].shape == (2, HEADS, 8, 2)


def test_dynamic_layer_operations_that_would_misread_the_buffers_are_refused():
    """transformers' crop or beam reordering would treat the spare room as held tokens."""
    layer = Layer()
    layer.update(states(2, 3), states(2, 3))
    for call in (lambda: layer.crop(-1), lambda: layer.batch_select_indices(torch.tensor([0]))):
        try:
            call()
        except NotImplementedError:
            continue
        raise AssertionError("an operation the layout does not support ran")

"""Codebook layouts against naive Python loops (audiocraft's habit), plus masks and bad ids."""
from __future__ import annotations

import numpy as np
import pytest

from shortcutlm.tokenizers import codebooks as cb

CARD = cb.CARD
EMPTY = CARD + 3


def naive_flatten(codes):
    n_q, frames = codes.shape
    out = []
    for t in range(frames):
        for k in range(n_q):
            out.append(k * CARD + int(codes[k, t]))
    return np.array(out, dtype=np.int64)


def naive_delay(codes, empty):
    n_q, frames = codes.shape
    steps = frames + n_q - 1 if frames else 0
    out = [[empty] * steps for _ in range(n_q)]
    for k in range(n_q):
        for t in range(frames):
            out[k][t + k] = int(codes[k, t])
    return np.array(out, dtype=np.int64).reshape(n_q, steps)


def random_codes(n_q, frames, seed=0):
    return np.random.default_rng(seed).integers(0, CARD, size=(n_q, frames))


@pytest.mark.parametrize("n_q,frames", [(1, 5), (2, 1), (2, 17), (4, 30), (8, 3), (32, 4), (4, 0)])
def test_flatten_matches_loops_and_reverts(n_q, frames):
    codes = random_codes(n_q, frames, seed=n_q * 100 + frames)
    ids = cb.build_flatten(codes)
    assert np.array_equal(ids, naive_flatten(codes))
    back, valid = cb.revert_flatten(ids, n_q)
    assert np.array_equal(back, codes) and valid.all() and back.shape == (n_q, frames)
    assert cb.flatten_valid(ids, n_q).all()


@pytest.mark.parametrize("n_q,frames", [(1, 5), (2, 1), (2, 17), (4, 30), (8, 3), (32, 4), (4, 0)])
def test_delay_matches_loops_and_reverts(n_q, frames):
    codes = random_codes(n_q, frames, seed=n_q * 7 + frames)
    streams = cb.build_delay(codes, EMPTY)
    assert np.array_equal(streams, naive_delay(codes, EMPTY))
    back, valid = cb.revert_delay(streams)
    assert np.array_equal(back, codes) and valid.all()
    mask = cb.delay_valid_mask(n_q, frames)
    assert np.array_equal(mask, streams != EMPTY)


def test_delay_mask_loops():
    n_q, frames = 4, 6
    mask = cb.delay_valid_mask(n_q, frames)
    for k in range(n_q):
        for s in range(frames + n_q - 1):
            assert mask[k, s] == (k <= s < k + frames)


def test_flatten_revert_marks_misplaced_and_special_ids_invalid():
    n_q = 2
    codes = random_codes(n_q, 4)
    ids = cb.build_flatten(codes)
    ids[0] = CARD + 5          # codebook-1 id where codebook 0 belongs
    ids[3] = n_q * CARD + 1    # a special
    ids = np.append(ids, 7)    # a trailing partial frame
    back, valid = cb.revert_flatten(ids, n_q)
    assert back.shape == (n_q, 4)
    assert not valid[0, 0] and not valid[1, 1] and valid.sum() == 6
    assert back[0, 0] == 0 and back[1, 1] == 0
    assert np.array_equal(back[valid], codes[valid])


def test_delay_revert_marks_specials_invalid():
    codes = random_codes(3, 5)
    streams = cb.build_delay(codes, EMPTY)
    streams[1, 3] = EMPTY
    back, valid = cb.revert_delay(streams)
    assert not valid[1, 2] and valid.sum() == 14 and back[1, 2] == 0


def test_bad_code_shapes_and_values():
    with pytest.raises(ValueError, match="codes must be"):
        cb.build_flatten(np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="lie in"):
        cb.build_delay(np.full((2, 3), CARD), EMPTY)

"""Codebook layouts: how K parallel EnCodec code streams (``codes[K, T]``) become token ids.

Two layouts, each a build/revert pair (tested against naive loops, audiocraft's habit):

* ``flatten``: one stream, frame-major: ``ids[t*K + k] = k*card + codes[k, t]``. Every id says
  which codebook it belongs to, so one softmax over ``K*card`` ids factorises the frame exactly.
* ``delay`` (MusicGen): K streams, stream k shifted right by k steps, ``empty`` in the positions
  no code reaches: ``out[k, t + k] = codes[k, t]``, shape ``[K, T + K - 1]``. All streams share
  the id space ``[0, card)`` plus specials.

Kept free of torch and of the codec so the model side can import it for masks and losses.
"""
from __future__ import annotations

import numpy as np

CARD = 1024  # codes per EnCodec codebook
LAYOUTS = ("flatten", "delay")


def _check_codes(codes: np.ndarray, card: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [K, T], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= card):
        raise ValueError(f"codes must lie in [0, {card}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------- flatten

def build_flatten(codes: np.ndarray, card: int = CARD) -> np.ndarray:
    """``codes[K, T]`` -> ``ids[T*K]``, frame-major, codebook k offset by ``k*card``."""
    codes = _check_codes(codes, card)
    k = codes.shape[0]
    return (codes + (np.arange(k, dtype=np.int64) * card)[:, None]).T.reshape(-1)


def flatten_valid(ids: np.ndarray, n_q: int, card: int = CARD) -> np.ndarray:
    """True where ``ids[i]`` is a code of the codebook its position implies (``i % K``).

    Only whole frames count: a trailing partial frame is invalid.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    position = np.arange(ids.size) % n_q
    whole = np.arange(ids.size) < (ids.size // n_q) * n_q
    return (ids >= position * card) & (ids < (position + 1) * card) & whole


def revert_flatten(ids: np.ndarray, n_q: int, card: int = CARD) -> tuple[np.ndarray, np.ndarray]:
    """``ids[T*K]`` -> ``(codes[K, T], valid[K, T])``.

    A trailing partial frame is dropped. Positions holding an id of another codebook or a
    special (which a sampler can produce) get code 0 and ``valid=False``, so decoding never fails.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    frames = ids.size // n_q
    ids = ids[: frames * n_q]
    valid = flatten_valid(ids, n_q, card).reshape(frames, n_q).T
    codes = (ids.reshape(frames, n_q).T - (np.arange(n_q, dtype=np.int64) * card)[:, None])
    return np.where(valid, codes, 0), valid


# ------------------------------------------------------------------------------------------ delay

def delay_valid_mask(n_q: int, frames: int) -> np.ndarray:
    """``[K, T + K - 1]`` bool: True where the delay pattern holds a real code (the loss mask)."""
    steps = frames + n_q - 1 if frames else 0
    t = np.arange(steps)[None, :]
    k = np.arange(n_q)[:, None]
    return (t >= k) & (t < k + frames)


def build_delay(codes: np.ndarray, empty_id: int, card: int = CARD) -> np.ndarray:
    """``codes[K, T]`` -> ``streams[K, T + K - 1]`` with stream k shifted right by k."""
    codes = _check_codes(codes, card)
    n_q, frames = codes.shape
    mask = delay_valid_mask(n_q, frames)
    out = np.full(mask.shape, empty_id, dtype=np.int64)
    out[mask] = codes.reshape(-1)  # row-major order of the mask matches codes' row-major order
    return out


def revert_delay(streams: np.ndarray, card: int = CARD) -> tuple[np.ndarray, np.ndarray]:
    """``streams[K, S]`` -> ``(codes[K, S - K + 1], valid[K, S - K + 1])``.

    ``valid`` is False where a stream holds a special or out-of-range id instead of a code
    (code 0 is put there, so decoding generated streams never fails).
    """
    streams = np.asarray(streams, dtype=np.int64)
    if streams.ndim != 2:
        raise ValueError(f"delay streams must be [K, S], got shape {streams.shape}")
    n_q, steps = streams.shape
    frames = max(steps - n_q + 1, 0)
    if frames == 0:
        return np.zeros((n_q, 0), np.int64), np.zeros((n_q, 0), bool)
    codes = streams[delay_valid_mask(n_q, frames)].reshape(n_q, frames)
    valid = (codes >= 0) & (codes < card)
    return np.where(valid, codes, 0), valid

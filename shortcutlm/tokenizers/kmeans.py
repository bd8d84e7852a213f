"""Residual k-means: the codebooks of both offline acoustic codecs, fitted in seconds.

Hand-written Lloyd iterations in torch rather than scikit-learn: on 20,000 points of 80
dimensions and 1,024 clusters, sklearn's MiniBatchKMeans (20 epochs) and KMeans (10 iterations)
each took about 20 s of CPU and reached a mean squared error of 402 and 386; ten Lloyd steps
as one matrix product each took 1.6 s and reached 389. A codec with 8 codebooks fits 8 of these
in a row, so this is what lets an offline prepare stay many times faster than real time.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch


# Rows scored at a time: 2,048 keeps the 8 MB distance block in cache; measured 3x faster than one
# (30,000 x 1,024) product followed by separate scale, add and argmin passes over memory.
ROWS_PER_BLOCK = 2048


def nearest(points: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of ``book[K, D]`` for each row of ``points[N, D]`` (ties: lowest index)."""
    norms = (book * book).sum(1)
    # ||p - c||^2 = ||p||^2 - 2 p.c + ||c||^2, and ||p||^2 is the same for every c of a row
    return torch.cat([torch.addmm(norms, block, book.T, alpha=-2.0).argmin(1) for block in points.split(ROWS_PER_BLOCK)]
                     or [torch.zeros(0, dtype=torch.int64, device=points.device)])


def plus_plus_start(points: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to the squared
    distance to the nearest centre so far (random starts leave two centres in one cluster).

    Distances come from one matrix-vector product per centre and the draw from a cumulative
    sum: written out as ``((points - c) ** 2).sum(1)`` with ``multinomial`` the seeding took three
    times as long as the Lloyd iterations after it.
    """
    norms = (points * points).sum(1)

    def gap_to(index: int) -> torch.Tensor:
        centre = points[index]
        return torch.addmv(norms + centre @ centre, points, centre, alpha=-2.0).clamp_min(0.0)

    chosen = [int(torch.randint(points.shape[0], (1,), generator=generator))]
    gap = gap_to(chosen[0])
    for _ in range(size - 1):
        cumulative = gap.cumsum(0)
        total = float(cumulative[-1])
        if total <= 0.0:  # every point already sits on a centre
            break
        draw = torch.rand(1, generator=generator, dtype=cumulative.dtype) * total
        pick = int(torch.searchsorted(cumulative, draw, right=True).clamp_max(points.shape[0] - 1))
        chosen.append(pick)
        gap = torch.minimum(gap, gap_to(pick))
    return points[chosen].clone()


def fit_codebook(points: torch.Tensor, size: int, iters: int, seed: int) -> torch.Tensor:
    """``size`` centroids of ``points[N, D]`` by Lloyd's algorithm from a k-means++ start.

    An emptied cluster keeps its previous centroid. With fewer distinct points than ``size``
    the spare entries repeat fitted ones; they are never chosen, since ties go to the lowest index.
    """
    generator = torch.Generator().manual_seed(seed)
    if points.shape[0] == 0:
        raise ValueError("k-means: no points to fit")
    # k-means does not care where the origin is; centred points keep ||p||^2 - 2 p.c + ||c||^2
    # from cancelling away the small differences between nearby points
    mean = points.mean(0)
    points = points - mean
    centres = plus_plus_start(points, size, generator)
    for _ in range(iters):
        assign = nearest(points, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=centres.shape[0]).to(points.dtype)[:, None]
        updated = torch.where(counts > 0, sums / counts.clamp_min(1.0), centres)
        if torch.equal(updated, centres):
            break
        centres = updated
    if centres.shape[0] < size:
        centres = torch.cat([centres, centres[torch.arange(size - centres.shape[0]) % centres.shape[0]]])
    return centres + mean


@dataclass
class FrameSample:
    """One file's frames for fitting: ``rows`` ``[n, D]``, all of its ``total`` frames or a uniform
    subset of them (a long file's, see :class:`FrameReservoir`)."""

    rows: np.ndarray
    total: int


def fitting_points(samples: Sequence[np.ndarray | FrameSample], max_points: int, seed: int) -> np.ndarray:
    """At most ``max_points`` rows of the samples, a seeded uniform subset of all the files' frames, in order.

    When every sample is whole, a subset of their concatenation, as always. When some file gave
    only a subset of its frames, each file's share of the draw is what a uniform draw from all
    the frames would give it (multivariate hypergeometric over the files' totals), taken from
    its rows: a long file weighs by its length, not by the rows it kept.
    """
    rows = [np.asarray(s.rows if isinstance(s, FrameSample) else s, dtype=np.float32) for s in samples]
    totals = [s.total if isinstance(s, FrameSample) else r.shape[0] for s, r in zip(samples, rows)]
    rng = np.random.default_rng(seed)
    if all(total == r.shape[0] for total, r in zip(totals, rows)):
        points = np.concatenate(rows)
        if points.shape[0] > max_points:
            points = points[np.sort(rng.choice(points.shape[0], max_points, replace=False))]
        return points
    counts = rng.multivariate_hypergeometric(np.asarray(totals, dtype=np.int64), min(max_points, sum(totals)))
    if any(count > r.shape[0] for count, r in zip(counts, rows)):
        raise ValueError("k-means: a file kept fewer frames than the draw asks of it "
                         "(its sample's cap is below max_points)")
    return np.concatenate([r[np.sort(rng.choice(r.shape[0], int(count), replace=False))]
                           for r, count in zip(rows, counts)])


def residual_kmeans(samples: Sequence[np.ndarray | FrameSample], books: int, size: int, iters: int, seed: int,
                    max_points: int) -> tuple[torch.Tensor, int]:
    """``books`` codebooks ``[books, size, D]``, each fitted on what the previous ones leave.

    ``samples`` are ``[rows, D]`` arrays or :class:`FrameSample` (one per training file), fitted
    as one set. At most ``max_points`` rows (:func:`fitting_points`) enter the fit; returns the
    codebooks and the number of rows used.
    """
    points = fitting_points(samples, max_points, seed)
    residual = torch.from_numpy(np.ascontiguousarray(points))
    out = []
    for k in range(books):
        book = fit_codebook(residual, size, iters, seed + k)
        residual = residual - book[nearest(residual, book)]
        out.append(book)
    return torch.stack(out), int(points.shape[0])


class FrameReservoir:
    """At most ``size`` rows of a stream of ``[n, D]`` blocks: all of them while they fit, then a
    seeded uniform sample (reservoir sampling, Vitter's algorithm R), returned in stream order.

    What the fit of one long file needs: :func:`residual_kmeans` never uses more than ``size``
    rows, and the reservoir holds ``size`` rows whatever the file's length.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = max(1, int(size))
        self.rng = np.random.default_rng(seed)
        self.blocks: list[np.ndarray] = []  # while everything seen still fits
        self.rows: np.ndarray | None = None  # the reservoir, once it does not
        self.index: np.ndarray | None = None  # stream position of each reservoir row
        self.seen = 0

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if self.rows is None:
            if self.seen + block.shape[0] <= self.size:
                self.blocks.append(block)
                self.seen += block.shape[0]
                return
            first = self.size - self.seen  # rows of this block that still fill the reservoir
            self.rows = np.concatenate(self.blocks + [block[:first]])
            self.index = np.arange(self.size)
            self.blocks = []
            self.seen = self.size
            block = block[first:]
        assert self.index is not None
        positions = self.seen + np.arange(block.shape[0])
        slots = self.rng.integers(0, positions + 1)  # row i takes slot j < size with probability size / (i + 1)
        taken = np.nonzero(slots < self.size)[0]
        # a slot drawn twice within this block ends with the later row, as one row at a time would
        reverse_slots, first_from_end = np.unique(slots[taken][::-1], return_index=True)
        rows = taken[len(taken) - 1 - first_from_end]
        self.rows[reverse_slots] = block[rows]
        self.index[reverse_slots] = positions[rows]
        self.seen += block.shape[0]

    def sample(self) -> FrameSample:
        """The rows kept and how many the stream held."""
        return FrameSample(self.frames(), self.seen)

    def frames(self) -> np.ndarray:
        """The rows kept, ``[min(seen, size), D]`` float32, in the order they came."""
        if self.rows is None:
            return np.concatenate(self.blocks) if self.blocks else np.zeros((0, 0), np.float32)
        assert self.index is not None
        return self.rows[np.argsort(self.index, kind="stable")]

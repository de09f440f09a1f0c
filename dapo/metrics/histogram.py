"""Streaming score histogram: exact for the highest scores, log-binned below; bounded memory.

:class:`ScoreHistogram` receives pixel scores with binary labels batch by batch and hands out
:class:`~dapo.metrics.ranking.RankedCounts` for AUROC, AP, F1-max and (with region weights)
AUPRO. Its memory depends on the range of scores seen, never on the number of images.

Binning on the float bit pattern (log binning)
-----------------------------------------------
A float32 ``x`` is turned into a 32-bit key whose unsigned order is the numeric order of ``x``
(set the sign bit of positives, invert negatives). Keeping the top ``9 + m`` bits (sign,
8 exponent bits, ``m`` mantissa bits) gives ``2**m`` bins per octave: a bin spans a *relative*
width between ``2**-(m+1)`` and ``2**-m`` of its values, for any sign and magnitude, so maps need
no known range (probabilities, logits and distances all work). Equal scores always share a
bin. Bins live in pages of ``2**(m-3)`` (one eighth of an octave) allocated where scores occur:
``2**m * 16`` bytes per octave in use (64 KiB at the default ``m = 12``; +50 % with weights).

Exact top
---------
The highest ``exact_top`` distinct float32 scores (65,536 by default) are also counted exactly,
one group per distinct value, down to a bin edge (the *boundary*, which only rises); ranking uses
those exact groups above the boundary and the bins below it. So inputs with few distinct
values (constant maps, ties, quantised scores, small tests) are ranked exactly, and so are
probabilities piling up just below a saturation value such as 1.0 at the top of the ranking,
where AP and F1 are most sensitive and where bins would be too wide. Costs at most 28 bytes
per exact value (1.8 MiB), plus a buffer of at most about ``2**18`` candidates (3.4 MiB)
between merges.

Error
-----
The bound of :mod:`dapo.metrics.ranking` applies to the resulting groups
(:meth:`ScoreHistogram.ranked` then ``auroc_error_bound`` / ``average_precision_error_bound``).
On continuous maps the actual error is far below the bound; ``benchmarks/bench_metrics.py``
reports both against scikit-learn. Raise ``bins_per_octave`` if the bound is too wide for a
use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dapo.metrics.ranking import RankedCounts

#: Default bins per octave of |score| (``m = 12`` mantissa bits).
DEFAULT_BINS_PER_OCTAVE = 4096
#: Default number of highest distinct scores counted exactly.
DEFAULT_EXACT_TOP = 65536
_PAGE_INDEX_BITS = 12  # sign + 8 exponent bits + 3 mantissa bits: 8 pages per octave
_FLOAT32_MANTISSA_BITS = 23
_NO_SLOT = np.uint32(0xFFFFFFFF)
_MAX_KEY = 0xFFFFFFFF
_CHUNK = 2**18  # scores processed at a time


def float_order_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order is the numeric order of ``values`` as float32.

    ``-0.0`` and ``+0.0`` get the same key. Values must be finite.
    """
    keys = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 == +0.0
    flip = (keys.view(np.int32) >> 31).view(np.uint32)  # all ones for negatives, zero otherwise
    flip |= np.uint32(0x80000000)
    keys ^= flip  # negatives: invert all bits (reverses their order); others: set the sign bit
    return keys


def float_from_order_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`float_order_keys`: the float32 values of ``keys``, as float64."""
    keys = np.asarray(keys, dtype=np.uint32)
    bits = np.where(keys >= np.uint32(0x80000000), keys ^ np.uint32(0x80000000), ~keys)
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def check_bins_per_octave(bins_per_octave: int) -> int:
    """Raise unless ``bins_per_octave`` is a power of two in [8, 65536]; return its log2."""
    mantissa_bits = int(bins_per_octave).bit_length() - 1
    if bins_per_octave != 2**mantissa_bits or not 3 <= mantissa_bits <= 16:
        raise ValueError(f"bins_per_octave must be a power of two in [8, 65536], got {bins_per_octave}")
    return mantissa_bits


def _distinct(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and how often each occurs."""
    if sorted_keys.size == 0:
        return sorted_keys, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    return sorted_keys[starts], np.diff(np.append(starts, sorted_keys.size))


class _ExactTop:
    """Exact counts per distinct key for keys at or above a rising bin boundary.

    Candidates above the current boundary are buffered and merged in bulk (sort once per
    ``_CHUNK`` buffered scores), which keeps the cost per score small.
    """

    def __init__(self, capacity: int, key_shift: int, track_weights: bool):
        self.capacity = capacity
        self.key_shift = key_shift
        self.boundary_bin = 0  # bins >= boundary_bin are counted here exactly
        self.keys = np.zeros(0, dtype=np.uint32)
        self.totals = np.zeros(0, dtype=np.int64)
        self.positives = np.zeros(0, dtype=np.int64)
        self.weights = np.zeros(0) if track_weights else None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._n_pending = 0

    @property
    def boundary_key(self) -> int:
        return self.boundary_bin << self.key_shift

    @property
    def nbytes(self) -> int:
        stored = (self.keys, self.totals, self.positives, self.weights)
        pending = [array for entry in self._pending for array in entry]
        return sum(array.nbytes for array in (*stored, *pending) if array is not None)

    def add(self, keys: np.ndarray, labels: np.ndarray, pos_weights: np.ndarray | None) -> None:
        if self.boundary_key > _MAX_KEY:
            return
        selected = keys >= np.uint32(self.boundary_key)
        if not selected.any():
            return
        weights = None if pos_weights is None else pos_weights[selected[labels]]
        self._pending.append((keys[selected], labels[selected], weights))
        self._n_pending += self._pending[-1][0].size
        if self._n_pending >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        """Merge the buffered candidates into the exact counts."""
        if not self._pending:
            return
        keys, labels = (np.concatenate([entry[i] for entry in self._pending]) for i in (0, 1))
        pos_weights = None if self.weights is None else np.concatenate([entry[2] for entry in self._pending])
        self._pending, self._n_pending = [], 0
        batch_keys, batch_totals = _distinct(np.sort(keys))
        start = self._raise_boundary(batch_keys)
        batch_keys, batch_totals = batch_keys[start:], batch_totals[start:]
        positive_keys = keys[labels]
        above = positive_keys >= np.uint32(min(self.boundary_key, _MAX_KEY))  # no finite score has key _MAX_KEY
        where = np.searchsorted(batch_keys, positive_keys[above])
        batch_positives = np.bincount(where, minlength=batch_keys.size)
        batch_weights = None
        if pos_weights is not None:
            batch_weights = np.bincount(where, weights=pos_weights[above], minlength=batch_keys.size)
        self._merge(batch_keys, batch_totals, batch_positives, batch_weights)

    def absorb(self, other: _ExactTop) -> None:
        """Add ``other``'s counts, as if its scores had been added after this store's (for :meth:`ScoreHistogram.merge`).

        The boundary becomes the higher of the two (both stores are complete above it); the
        buffered candidates are concatenated unflushed, this store's first, so that stores
        that never flushed give the one-stream weight sums bit for bit.
        """
        self.boundary_bin = max(self.boundary_bin, other.boundary_bin)
        if self.boundary_key > _MAX_KEY:
            self._pending, self._n_pending = [], 0
            return
        bound = np.uint32(self.boundary_key)
        pending = []
        for keys, labels, weights in self._pending + other._pending:
            selected = keys >= bound
            pending.append((keys[selected], labels[selected], None if weights is None else weights[selected[labels]]))
        self._pending, self._n_pending = pending, sum(entry[0].size for entry in pending)
        keep = other.keys >= bound
        self._merge(other.keys[keep], other.totals[keep], other.positives[keep],
                    None if other.weights is None else other.weights[keep])

    def _raise_boundary(self, sorted_keys: np.ndarray) -> int:
        """Raise the boundary so that at most ``capacity`` of ``sorted_keys`` stay; index of the first kept."""
        if sorted_keys.size > self.capacity:
            last_dropped = int(sorted_keys[sorted_keys.size - self.capacity - 1])
            self.boundary_bin = max(self.boundary_bin, (last_dropped >> self.key_shift) + 1)
        if self.boundary_key > _MAX_KEY:
            return sorted_keys.size
        return int(np.searchsorted(sorted_keys, np.uint32(self.boundary_key)))

    def _merge(self, keys, totals, positives, weights) -> None:
        """Add counts of sorted distinct ``keys`` into the store, then drop what fell below the boundary."""
        at = np.searchsorted(self.keys, keys)
        found = at < self.keys.size
        found[found] = self.keys[at[found]] == keys[found]
        fresh = ~found
        columns = {"totals": totals, "positives": positives}
        if weights is not None:
            columns["weights"] = weights
        self.keys = np.insert(self.keys, at[fresh], keys[fresh])
        start = self._raise_boundary(self.keys)
        self.keys = self.keys[start:]
        for name, added in columns.items():
            current = getattr(self, name)
            current[at[found]] += added[found]
            setattr(self, name, np.insert(current, at[fresh], added[fresh])[start:])


class ScoreHistogram:
    """Streaming histogram of positive and negative scores (see the module docstring).

    Parameters
    ----------
    bins_per_octave:
        Power of two between 8 and 2**16: bins per doubling of ``|score|``.
    track_weights:
        Also accumulate a per-group sum of weights over positives (region weights for AUPRO).
    exact_top:
        How many of the highest distinct scores are counted exactly (0: bins only).
    """

    def __init__(
        self,
        bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE,
        track_weights: bool = False,
        exact_top: int = DEFAULT_EXACT_TOP,
    ):
        mantissa_bits = check_bins_per_octave(bins_per_octave)
        if exact_top < 0:
            raise ValueError(f"exact_top must be >= 0, got {exact_top}")
        self.bins_per_octave = int(bins_per_octave)
        self._key_shift = _FLOAT32_MANTISSA_BITS - mantissa_bits
        self._offset_bits = mantissa_bits - 3
        self._page_size = 2**self._offset_bits
        self._slot_of_page = np.full(2**_PAGE_INDEX_BITS, _NO_SLOT, dtype=np.uint32)
        self._page_of_slot = np.empty(0, dtype=np.int64)
        self._totals = np.zeros((0, self._page_size), dtype=np.int64)
        self._positives = np.zeros((0, self._page_size), dtype=np.int64)
        self._weights = np.zeros((0, self._page_size)) if track_weights else None
        self._top = _ExactTop(exact_top, self._key_shift, track_weights) if exact_top else None

    @property
    def nbytes(self) -> int:
        """Memory held by the counts."""
        bins = sum(array.nbytes for array in self._bin_arrays())
        return bins + (self._top.nbytes if self._top else 0)

    def add(self, scores: np.ndarray, labels: np.ndarray, pos_weights: np.ndarray | None = None) -> None:
        """Add finite ``scores`` with boolean ``labels`` of the same size (any shape, flattened).

        ``pos_weights`` holds one weight per positive, in flattened order; it is required
        exactly when the histogram was built with ``track_weights=True``.
        """
        if (pos_weights is None) != (self._weights is None):
            raise ValueError("pos_weights must be given if and only if the histogram tracks weights")
        scores = np.asarray(scores).reshape(-1)
        labels = np.asarray(labels, dtype=bool).reshape(-1)
        if scores.size != labels.size:
            raise ValueError(f"{scores.size} scores but {labels.size} labels")
        if pos_weights is not None:
            pos_weights = np.asarray(pos_weights, dtype=np.float64).reshape(-1)
            if pos_weights.size != np.count_nonzero(labels):
                raise ValueError(f"{pos_weights.size} pos_weights for {np.count_nonzero(labels)} positives")
        done_positives = 0
        for start in range(0, scores.size, _CHUNK):  # chunks that stay in cache: several times faster
            keys = float_order_keys(scores[start : start + _CHUNK])
            chunk_labels = labels[start : start + _CHUNK]
            chunk_weights = None
            if pos_weights is not None:
                n_positives = int(np.count_nonzero(chunk_labels))
                chunk_weights = pos_weights[done_positives : done_positives + n_positives]
                done_positives += n_positives
            if self._top is not None:
                self._top.add(keys, chunk_labels, chunk_weights)
            self._add_to_bins(keys, chunk_labels, chunk_weights)

    def _add_to_bins(self, keys: np.ndarray, labels: np.ndarray, pos_weights: np.ndarray | None) -> None:
        bins = keys  # shifted in place: keys are not used afterwards
        bins >>= np.uint32(self._key_shift)
        pages = bins >> np.uint32(self._offset_bits)
        slots = np.take(self._slot_of_page, pages)
        missing = slots == _NO_SLOT
        if missing.any():
            self._allocate(np.unique(pages[missing]))
            slots = np.take(self._slot_of_page, pages)
        bins &= np.uint32(self._page_size - 1)
        slots <<= np.uint32(self._offset_bits)
        bins |= slots  # index of the bin in the page storage
        shape = self._totals.shape
        self._totals += np.bincount(bins, minlength=self._totals.size).reshape(shape)
        positive_bins = bins[labels]
        self._positives += np.bincount(positive_bins, minlength=self._totals.size).reshape(shape)
        if self._weights is not None:
            self._weights += np.bincount(positive_bins, weights=pos_weights, minlength=self._totals.size).reshape(shape)

    def _bin_arrays(self) -> list[np.ndarray]:
        return [self._totals, self._positives] + ([] if self._weights is None else [self._weights])

    def _allocate(self, pages: np.ndarray) -> None:
        first = self._page_of_slot.size
        self._slot_of_page[pages] = np.arange(first, first + pages.size, dtype=np.uint32)
        self._page_of_slot = np.concatenate([self._page_of_slot, pages.astype(np.int64)])

        def grow(array: np.ndarray) -> np.ndarray:
            return np.concatenate([array, np.zeros((pages.size, self._page_size), array.dtype)])

        self._totals, self._positives = grow(self._totals), grow(self._positives)
        if self._weights is not None:
            self._weights = grow(self._weights)

    def ranked(self) -> RankedCounts:
        """Exact groups of the top scores, then the non-empty bins below them, highest first.

        Each group carries its score range (``lower``, ``upper``): the value itself for exact
        groups, the float32 range of the bin otherwise.
        """
        blocks = []  # (totals, positives, weights, lowest key, highest key), highest scores first
        boundary = np.iinfo(np.int64).max
        if self._top is not None:
            top = self._top
            top.flush()
            boundary = top.boundary_bin
            keys = top.keys[::-1]
            blocks.append((top.totals[::-1], top.positives[::-1], None if top.weights is None else top.weights[::-1],
                           keys, keys))
        order = np.argsort(self._page_of_slot)
        bin_ids = ((self._page_of_slot[order, None] << self._offset_bits) | np.arange(self._page_size)).ravel()
        totals = self._totals[order].ravel()
        keep = np.flatnonzero((totals > 0) & (bin_ids < boundary))[::-1]
        weights = None if self._weights is None else self._weights[order].ravel()[keep]
        first_keys = bin_ids[keep] << self._key_shift
        blocks.append((totals[keep], self._positives[order].ravel()[keep], weights,
                       first_keys, first_keys + (2**self._key_shift - 1)))

        def joined(index: int, dtype=np.float64) -> np.ndarray:
            return np.concatenate([np.asarray(block[index], dtype=dtype) for block in blocks])

        total, pos = joined(0), joined(1)
        pos_weight = None if self._weights is None else joined(2)
        lower = float_from_order_keys(joined(3, np.uint32))
        upper = float_from_order_keys(joined(4, np.uint32))
        return RankedCounts(pos, total - pos, pos_weight, lower=lower, upper=upper)

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """Add every score of ``other`` (same settings) to this histogram, in place; returns ``self``.

        For the reduction of sharded evaluations (:mod:`dapo.engine.distributed`). Bin counts add and
        the exact top ends in the state a single stream reaches (its boundary and groups depend
        only on the scores seen), so the integer counts, hence AUROC, AP and F1-max, equal those
        of one histogram fed every batch. The float weight sums (AUPRO) add too: equal bit for
        bit when neither side flushed its exact top early (fewer than ``2**18`` candidates) and
        every score lies in the exact top, else equal up to float rounding of the sums.
        """
        if (other.bins_per_octave, other._weights is None) != (self.bins_per_octave, self._weights is None):
            raise ValueError("merged histograms must share bins_per_octave and track_weights")
        if (other._top is None) != (self._top is None) or (self._top and self._top.capacity != other._top.capacity):
            raise ValueError("merged histograms must share exact_top")
        if other._page_of_slot.size:
            missing = other._page_of_slot[self._slot_of_page[other._page_of_slot] == _NO_SLOT]
            if missing.size:
                self._allocate(missing)
            slots = self._slot_of_page[other._page_of_slot].astype(np.int64)
            for mine, theirs in zip(self._bin_arrays(), other._bin_arrays()):
                mine[slots] += theirs
        if self._top is not None:
            self._top.absorb(other._top)
        return self

    @classmethod
    def pooled(cls, histograms: Sequence[ScoreHistogram]) -> ScoreHistogram:
        """One unweighted histogram of every score of ``histograms`` (same ``bins_per_octave``).

        Bins add up; the exact top keeps the values at or above the highest boundary of the
        inputs (their counts are complete there), up to the largest exact capacity.
        """
        histograms = list(histograms)
        if not histograms:
            raise ValueError("pooled needs at least one histogram")
        bins_per_octave = histograms[0].bins_per_octave
        if any(h.bins_per_octave != bins_per_octave for h in histograms):
            raise ValueError("pooled histograms must share bins_per_octave")
        tops = [h._top for h in histograms]
        exact = all(top is not None for top in tops)
        out = cls(bins_per_octave, exact_top=max(top.capacity for top in tops) if exact else 0)
        pages = np.unique(np.concatenate([h._page_of_slot for h in histograms]))
        if pages.size:
            out._allocate(pages)
        for h in histograms:
            slots = out._slot_of_page[h._page_of_slot].astype(np.int64)
            out._totals[slots] += h._totals
            out._positives[slots] += h._positives
        if exact:
            for top in tops:
                top.flush()
            out._top.boundary_bin = max(top.boundary_bin for top in tops)
            keys = np.concatenate([top.keys for top in tops])
            above = keys >= np.uint32(min(out._top.boundary_key, _MAX_KEY))
            distinct, where = np.unique(keys[above], return_inverse=True)
            totals, positives = (np.bincount(where, weights=np.concatenate([getattr(top, name) for top in tops])[above],
                                             minlength=distinct.size).astype(np.int64)
                                 for name in ("totals", "positives"))
            out._top._merge(distinct.astype(np.uint32), totals, positives, None)
        return out

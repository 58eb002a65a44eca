"""A log-bucketed latency histogram (HDR-style): fixed memory, bounded relative error, mergeable.

Values are integers (the bench records microseconds). Values below ``2 ** (precision + 1)`` are counted exactly;
above that, each power-of-two range is split into ``2 ** precision`` equal buckets, so a bucket is never wider than
``1 / 2 ** precision`` of its values (precision 7: under 0.8 %). The bucket array covers ``0 .. 2 ** max_bits - 1``
(default 2 ** 36 µs, about 19 hours) and is allocated once: memory does not grow with the number of samples.
Values beyond the range land in the last bucket; the exact minimum, maximum and sum are kept beside the buckets.

A percentile is reported as the highest value its bucket can hold (the conservative choice HdrHistogram makes),
capped at the exact maximum.
"""

from __future__ import annotations

import threading
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = ["Histogram"]


class Histogram:
    """Counts of non-negative integer values in log-linear buckets; see the module docstring.

    Thread-safe: ``record`` takes a lock (the bench records from the sender's worker threads).
    """

    __slots__ = ("precision", "max_bits", "_half", "_exact", "_counts", "count", "total", "min", "max", "_lock")

    def __init__(self, *, precision: int = 7, max_bits: int = 36) -> None:
        if not 1 <= precision <= 14:
            raise ValueError("precision must be between 1 and 14")
        if max_bits <= precision + 1:
            raise ValueError("max_bits must be larger than precision + 1")
        self.precision = precision
        self.max_bits = max_bits
        self._half = 1 << precision
        self._exact = 1 << (precision + 1)
        nbuckets = self._exact + (max_bits - precision - 1) * self._half
        self._counts: List[int] = [0] * nbuckets
        self.count = 0
        self.total = 0
        self.min: Optional[int] = None
        self.max: Optional[int] = None
        self._lock = threading.Lock()

    # -- bucket arithmetic ------------------------------------------------------------------------------------

    def _index(self, value: int) -> int:
        if value < self._exact:
            return value
        shift = value.bit_length() - self.precision - 1
        index = self._exact + (shift - 1) * self._half + ((value >> shift) - self._half)
        last = len(self._counts) - 1
        return index if index < last else last

    def _bounds(self, index: int) -> Tuple[int, int]:
        """``(lowest, highest)`` value counted in bucket ``index``."""
        if index < self._exact:
            return index, index
        rel = index - self._exact
        shift = rel // self._half + 1
        top = rel % self._half + self._half
        return top << shift, ((top + 1) << shift) - 1

    # -- recording --------------------------------------------------------------------------------------------

    def record(self, value: int, count: int = 1) -> None:
        """Count ``value`` (clamped at 0) ``count`` times."""
        value = int(value)
        if value < 0:
            value = 0
        i = self._index(value)
        with self._lock:
            self._counts[i] += count
            self.count += count
            self.total += value * count
            if self.min is None or value < self.min:
                self.min = value
            if self.max is None or value > self.max:
                self.max = value

    def merge(self, other: "Histogram") -> None:
        """Add every count of ``other`` (same precision and range) to this histogram."""
        if other.precision != self.precision or other.max_bits != self.max_bits:
            raise ValueError("cannot merge histograms of different precision or range")
        with other._lock:
            counts = list(other._counts)
            count, total, lo, hi = other.count, other.total, other.min, other.max
        with self._lock:
            mine = self._counts
            for i, c in enumerate(counts):
                if c:
                    mine[i] += c
            self.count += count
            self.total += total
            if lo is not None and (self.min is None or lo < self.min):
                self.min = lo
            if hi is not None and (self.max is None or hi > self.max):
                self.max = hi

    def snapshot_and_reset(self) -> "Histogram":
        """A copy of the current counts; this histogram starts empty again (interval histograms)."""
        copy = Histogram(precision=self.precision, max_bits=self.max_bits)
        with self._lock:
            copy._counts, self._counts = self._counts, [0] * len(self._counts)
            copy.count, copy.total, copy.min, copy.max = self.count, self.total, self.min, self.max
            self.count, self.total, self.min, self.max = 0, 0, None, None
        return copy

    # -- reading ----------------------------------------------------------------------------------------------

    @property
    def mean(self) -> Optional[float]:
        """Exact mean of the recorded values, or ``None`` when empty."""
        return self.total / self.count if self.count else None

    def percentile(self, q: float) -> Optional[int]:
        """The value at percentile ``q`` (0–100), or ``None`` when empty."""
        if not 0 <= q <= 100:
            raise ValueError("percentile must be between 0 and 100")
        with self._lock:
            if not self.count:
                return None
            # the rank of the sample at q: at least 1, so q=0 gives the smallest bucket that has a sample
            rank = max(1, -(-self.count * q // 100))
            seen = 0
            for i, c in enumerate(self._counts):
                if c:
                    seen += c
                    if seen >= rank:
                        assert self.max is not None
                        if i == len(self._counts) - 1:
                            return self.max  # the overflow bucket: its values are only bounded by the maximum
                        return min(self._bounds(i)[1], self.max)
            return self.max

    def percentiles(self, qs: Iterable[float]) -> Dict[float, Optional[int]]:
        """``{q: value}`` for several percentiles."""
        return {q: self.percentile(q) for q in qs}

    def buckets(self) -> List[Tuple[int, int, int]]:
        """Non-empty buckets as ``(lowest, highest, count)``, in increasing order."""
        with self._lock:
            return [(*self._bounds(i), c) for i, c in enumerate(self._counts) if c]

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} min={self.min} max={self.max}>"

"""Recognising requests across steps from what vLLM's ``custom_class`` interface passes.

vLLM (0.32/0.33) calls a custom proposer with the persistent batch's token rows and per-row
counts, but no request ids, and it moves rows between steps: finished requests are removed and
the last rows slide into the holes (``InputBatch.condense``), unscheduled requests leave the
batch and come back in another row, and a model runner may reorder rows. A drafter with
per-request state (the trie's local trie, the n-gram index) and cross-request memory (the trie's
shared outputs) needs to know which request a row holds.

A row's tokens are its identity: request ``r``'s row always starts with the tokens it held when
last seen (``length`` tokens), followed by what it emitted since (at most ``k + 1`` tokens a
step). :class:`RequestTracker` keeps a digest of each known request's ``row[:length]`` and, for
a row of ``n`` tokens, hashes its prefix once and checks the lengths ``n, n - 1, ...,
n - max_gap`` incrementally (one pass over the row, then one token per length tried), so
recognising a row costs O(n) hashing whatever the number of live requests. Two requests with
equal tokens are interchangeable (their drafts are equal too); each is claimed once per step.

A known request missing from ``grace_steps`` consecutive calls is finished (or preempted for
long): the drafter's ``stop`` runs, which is when a :class:`fastdec.TrieDrafter` adds the
request's output to its shared trie. A preempted request that comes back later starts a new
state. At most ``max_requests`` are tracked; one more stops the least recently seen.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from fastdec.integrations._common import BatchDrafter

_DIGEST_BYTES = 16


def _prefix_hashes(row: npt.NDArray[Any], lengths: range) -> dict[int, bytes]:
    """Digests of ``row[:L]`` for every ``L`` in ``lengths`` (an increasing range), in one pass.

    >>> row = np.arange(6, dtype=np.int32)
    >>> h = _prefix_hashes(row, range(3, 6))
    >>> h[4] == _prefix_hashes(row[:4], range(4, 5))[4]
    True
    """
    out: dict[int, bytes] = {}
    if not len(lengths):
        return out
    first = lengths[0]
    h = hashlib.blake2b(row[:first].tobytes(), digest_size=_DIGEST_BYTES)
    out[first] = h.digest()
    for length in lengths[1:]:
        h.update(row[length - 1 : length].tobytes())
        out[length] = h.digest()
    return out


@dataclass
class TrackedRequest:
    """What the tracker knows of one request."""

    #: the drafter's request id (an int the tracker allocates)
    request_id: int
    #: tokens of its row when last seen
    length: int
    #: digest of those tokens
    digest: bytes
    #: the tracker step it was last seen at
    last_seen: int
    #: the draft returned for it at the last step (for acceptance feedback)
    draft: list[int] = field(default_factory=list)
    #: per draft token, the confidence the length controller gave it
    draft_confidence: list[float] = field(default_factory=list)


@dataclass
class RowMatch:
    """One batch row of a step, as the tracker saw it."""

    row: int
    request: TrackedRequest
    #: tokens the request emitted since it was last seen (empty for a new request)
    new_tokens: npt.NDArray[np.int32]
    #: True when the request was first seen at this step
    is_new: bool
    #: the previous step's draft and its confidences (empty for a new request)
    previous_draft: list[int]
    previous_confidence: list[float]


class RequestTracker:
    """Per-request drafter state through vLLM's id-less proposer interface.

    Args:
        drafter: a stateful fastdec drafter (``start`` / ``accept`` / ``stop``).
        max_gap: the most tokens a request may have emitted since it was last seen and still be
            recognised (vLLM emits at most ``k + 1`` a step; more slack covers skipped calls).
        grace_steps: calls a known request may be missing before it counts as finished.
        max_requests: requests tracked at once (the least recently seen is stopped beyond).

    Raises:
        ValueError: a bound below 1.
    """

    def __init__(
        self, drafter: BatchDrafter, *, max_gap: int, grace_steps: int = 4, max_requests: int = 1024
    ) -> None:
        for name, value in (
            ("max_gap", max_gap),
            ("grace_steps", grace_steps),
            ("max_requests", max_requests),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} = {value!r}: must be >= 1")
        self.drafter = drafter
        self.max_gap = int(max_gap)
        self.grace_steps = int(grace_steps)
        self.max_requests = int(max_requests)
        self.step_index = 0
        self._next_id = 0
        # (length, digest) -> requests whose row[:length] had that digest when last seen
        self._index: dict[tuple[int, bytes], list[TrackedRequest]] = {}
        self._live: dict[int, TrackedRequest] = {}  # request id -> state, least recently seen first
        #: requests started and stopped so far (for tests and stats)
        self.started = 0
        self.stopped = 0

    def __len__(self) -> int:
        return len(self._live)

    def _unindex(self, req: TrackedRequest) -> None:
        key = (req.length, req.digest)
        bucket = self._index.get(key)
        if bucket is not None:
            bucket.remove(req)
            if not bucket:
                del self._index[key]

    def _reindex(self, req: TrackedRequest, length: int, digest: bytes) -> None:
        self._unindex(req)
        req.length, req.digest = length, digest
        self._index.setdefault((length, digest), []).append(req)

    def _stop(self, req: TrackedRequest) -> None:
        self._unindex(req)
        del self._live[req.request_id]
        self.stopped += 1
        with contextlib.suppress(KeyError):  # the drafter evicted it already (its own request cap)
            self.drafter.stop(req.request_id)

    def _find(self, row: npt.NDArray[Any], n: int, claimed: set[int]) -> tuple[TrackedRequest, bytes] | None:
        """The known request whose tokens ``row`` continues (longest match first)."""
        lengths = range(max(1, n - self.max_gap), n + 1)
        digests = _prefix_hashes(row, lengths)
        for length in reversed(lengths):
            for req in self._index.get((length, digests[length]), ()):
                if req.request_id not in claimed:
                    return req, digests[n]
        return None

    def step(
        self, sampled_token_ids: Sequence[Sequence[int]], counts: npt.NDArray[Any], rows: npt.NDArray[Any]
    ) -> list[RowMatch | None]:
        """Matches every row of this step to a request (starting new ones), feeds the drafter
        what each emitted, and stops requests missing for ``grace_steps`` calls.

        Returns:
            per row, its match, or None for a row with no tokens or that emitted nothing and
            is not known (a partial prefill).
        """
        self.step_index += 1
        step = self.step_index
        claimed: set[int] = set()
        out: list[RowMatch | None] = []
        for i, sampled in enumerate(sampled_token_ids):
            n = int(counts[i])
            if n <= 0:
                out.append(None)
                continue
            row = np.ascontiguousarray(rows[i, :n], dtype=np.int32)
            found = self._find(row, n, claimed)
            if found is not None:
                req, digest = found
                claimed.add(req.request_id)
                new = row[req.length :].copy()
                previous, confidence = req.draft, req.draft_confidence
                req.draft, req.draft_confidence = [], []
                if len(new):
                    try:
                        self.drafter.accept(req.request_id, new)
                    except KeyError:  # evicted by the drafter's own cap: start it again
                        self.drafter.start(req.request_id, row)
                self._reindex(req, n, digest)
                req.last_seen = step
                self._live[req.request_id] = self._live.pop(req.request_id)  # most recent last
                out.append(RowMatch(i, req, new, False, previous, confidence))
                continue
            if not len(sampled):
                out.append(None)  # a prefill chunk: the request is not decoding yet
                continue
            prompt_len = max(1, n - len(sampled))
            req = TrackedRequest(self._next_id, 0, b"", step)
            self._next_id += 1
            self.drafter.start(req.request_id, row[:prompt_len])
            if prompt_len < n:
                self.drafter.accept(req.request_id, row[prompt_len:])
            self._reindex(req, n, _prefix_hashes(row, range(n, n + 1))[n])
            self._live[req.request_id] = req
            self.started += 1
            claimed.add(req.request_id)
            while len(self._live) > self.max_requests:
                self._stop(next(iter(self._live.values())))
            out.append(RowMatch(i, req, np.empty(0, dtype=np.int32), True, [], []))
        for req in [r for r in self._live.values() if step - r.last_seen >= self.grace_steps]:
            self._stop(req)
        return out

    def stop_all(self) -> None:
        """Stops every tracked request (their outputs reach the shared trie)."""
        for req in list(self._live.values()):
            self._stop(req)

"""Sending many requests: the cache first, then the endpoint under a concurrency limit, with bounded retries of
malformed structured output and one accounting row for every attempt.

Transport retries are the SDK's (408, 409, 429, 5xx). What fails after them comes back as a failed outcome,
which the stage turns into "rerun to resume" (answers already cached are not sent again). A refusal that no
retry can fix (another 4xx: a bad key, an unknown model, a malformed request) stops the run with one line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectlens.errors import AffectlensError
from affectlens.runtime.providers.base import ApiFailure, ApiReply, ApiRequest, Provider
from affectlens.runtime.providers.cache import RequestCache, request_key
from affectlens.store.atomic import write_json

# Parses a reply into the value a stage keeps; raises ValueError (with a reason) on malformed output.
Parser = Callable[[ApiReply], Any]
ACCOUNT_COLUMNS = [
    "item", "sample", "attempt", "key", "from_cache", "batch", "request_id", "input_tokens", "output_tokens",
    "cached_tokens", "retries", "ok", "reason",
]  # fmt: skip


@dataclass(frozen=True)
class Job:
    item: str  # what the stage calls this unit (a prompt id, a face)
    request: ApiRequest
    sample: int = 0
    parse: Parser | None = None


@dataclass
class Outcome:
    job: Job
    reply: ApiReply | None = None
    value: Any = None
    ok: bool = False
    reason: str | None = None
    transport_failed: bool = False  # failed after the SDK's retries: a rerun asks again
    accounts: list[dict[str, Any]] = field(default_factory=list)


class Runner:
    def __init__(self, provider: Provider, cache: RequestCache | None, *, concurrency: int = 4,
                 parse_retries: int = 2) -> None:  # fmt: skip
        if concurrency < 1:
            raise AffectlensError(f"concurrency must be at least 1 (got {concurrency})")
        self.provider, self.cache = provider, cache
        self.concurrency, self.parse_retries = concurrency, parse_retries
        # Every attempt's accounting row, appended as it happens (from any thread), so that a stage can keep
        # the rows of work that never became a part: a refusal mid-group, a kill, a batch.
        self.log: list[dict[str, Any]] = []

    def key(self, job: Job, attempt: int) -> str:
        return request_key(self.provider.spec, self.provider.base_url, job.request, job.sample, attempt)

    def cached(self, job: Job) -> bool:
        return self.cache is not None and self.key(job, 0) in self.cache

    def drain(self) -> list[dict[str, Any]]:
        """The accounting rows logged since the last drain."""
        rows, self.log = self.log, []
        return rows

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Every job's outcome, in order. Raises AffectlensError at the first refusal that retrying cannot fix;
        that, or an interrupt, cancels the requests not yet started."""
        if self.concurrency == 1 or len(jobs) <= 1:
            return [self._one(job) for job in jobs]
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = [pool.submit(self._one, job) for job in jobs]
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the ones in flight finish and are cached
            raise
        finally:
            pool.shutdown(wait=True)

    def _one(self, job: Job) -> Outcome:
        outcome = Outcome(job)
        for attempt in range(self.parse_retries + 1):
            key = self.key(job, attempt)
            reply = self.cache.get(key) if self.cache is not None else None
            from_cache = reply is not None
            if reply is None:
                try:
                    reply = self.provider.send(job.request)
                except ApiFailure as failure:
                    outcome.accounts.append(self._account(job, attempt, key, None, failure.reason))
                    if not failure.retryable:
                        raise AffectlensError(
                            f"{self.provider.spec}: {failure.reason} (not retried)"
                        ) from None
                    outcome.reason, outcome.transport_failed = failure.reason, True
                    return outcome
                if self.cache is not None:
                    self.cache.put(key, reply)
            outcome.reply = reply
            try:
                outcome.value = job.parse(reply) if job.parse else reply.text
            except ValueError as exc:
                outcome.reason = f"malformed output: {exc}"
                outcome.accounts.append(self._account(job, attempt, key, reply, outcome.reason, from_cache))
                continue
            outcome.ok, outcome.reason = True, None
            outcome.accounts.append(self._account(job, attempt, key, reply, None, from_cache))
            return outcome
        return outcome  # malformed on every attempt: recorded with its reason, never dropped

    def prefetch_batch(self, jobs: Sequence[Job], state: Path, *, poll_seconds: float = 30.0,
                       progress: Callable[[str], None] | None = None) -> int:  # fmt: skip
        """Answer the uncached first attempts of ``jobs`` through the vendor's batch API, into the cache.

        The batch id is kept in ``state``, so an interrupted run polls the same batch instead of paying twice.
        Returns how many requests the submitted batch held.
        """
        submit = getattr(self.provider, "submit_batch", None)
        if submit is None or not self.provider.capabilities.batches:
            raise AffectlensError(f"{self.provider.spec} has no batch API here; drop --batch")
        if self.cache is None:
            raise AffectlensError("--batch needs the request cache (drop --no-cache)")
        pending = {self.key(job, 0): job for job in jobs if not self.cached(job)}
        saved = json.loads(state.read_text()) if state.exists() else {}
        batch_id, n = saved.get("batch_id"), len(saved.get("custom_ids", []))
        if batch_id is None:
            if not pending:
                return 0
            batch_id, n = submit([(key, job.request) for key, job in pending.items()]), len(pending)
            write_json(state, {"batch_id": batch_id, "custom_ids": list(pending)})
        while not self.provider.batch_ended(batch_id):  # type: ignore[attr-defined]
            if progress:
                progress(f"waiting for batch {batch_id}")
            time.sleep(poll_seconds)
        by_key = {self.key(job, 0): job for job in jobs}
        for custom_id, result in self.provider.batch_results(batch_id):  # type: ignore[attr-defined]
            if isinstance(result, ApiReply):
                self.cache.put(custom_id, result)
                if custom_id in by_key:  # paid for now, at the batch price; run() then finds it cached
                    self._account(by_key[custom_id], 0, custom_id, result, None, batch=True)
        state.unlink()
        return n

    def _account(self, job: Job, attempt: int, key: str, reply: ApiReply | None, reason: str | None,
                 from_cache: bool = False, *, batch: bool = False) -> dict[str, Any]:  # fmt: skip
        row = {
            "item": job.item,
            "sample": job.sample,
            "attempt": attempt,
            "key": key,
            "from_cache": from_cache,
            "batch": batch,
            "request_id": reply.request_id if reply else None,
            "input_tokens": reply.input_tokens if reply else 0,
            "output_tokens": reply.output_tokens if reply else 0,
            "cached_tokens": reply.cached_tokens if reply else 0,
            "retries": reply.retries if reply else 0,
            "ok": reason is None,
            "reason": reason,
        }
        self.log.append(row)  # list.append is atomic: threads may log at once
        return row

"""The stage skeleton for API models: each key's requests go through the runner (cache, concurrency, bounded
retries of malformed output), each group is one part with its accounting, and the run's summary says what was
sent, what came from the cache, the tokens and an estimated cost.

A request that still fails after the SDK's retries stops the run with "rerun to resume": every answer already
received is in the request cache, so the rerun sends only what is missing. ``plan`` is the dry run: it counts
requests and estimates cost without sending or writing anything.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import pandas as pd

from affectlens.config import ApiConfig
from affectlens.errors import AffectlensError
from affectlens.progress import status
from affectlens.runtime.loading import cache_dir
from affectlens.runtime.providers import Provider
from affectlens.runtime.providers.base import CHARS_PER_TOKEN, public_url
from affectlens.runtime.providers.cache import RequestCache
from affectlens.runtime.providers.pricing import estimate_cost, load_prices, price_of
from affectlens.runtime.providers.runner import ACCOUNT_COLUMNS, Job, Outcome, Runner
from affectlens.stages.base import Part, Stage
from affectlens.store.runs import batch_state, write_requests

GROUP = 16  # keys per part: small enough that a kill loses little, large enough to keep requests in flight


def request_cache() -> RequestCache:
    return RequestCache(cache_dir() / "requests")


class ApiStage(Stage):
    """A stage whose model is a :class:`Provider`. Subclasses say which jobs a key needs and what its rows are."""

    def __init__(self, provider: Provider, out: str, api: ApiConfig, *, quiet: bool = False) -> None:
        super().__init__(provider, out, quiet=quiet)
        self.provider, self.api = provider, api
        self.runner = Runner(provider, request_cache() if api.cache else None, concurrency=api.concurrency,
                             parse_retries=api.parse_retries)  # fmt: skip

    @abstractmethod
    def jobs(self, key: str) -> list[Job]:
        """Every request that key ``key`` needs."""

    @abstractmethod
    def tables(self, key: str, outcomes: Sequence[Outcome]) -> dict[str, pd.DataFrame]:
        """Key ``key``'s rows, by table, from its outcomes (in ``jobs`` order)."""

    @property
    @abstractmethod
    def system(self) -> str:
        """The system text every request shares (for prompt caching and the manifest)."""

    def model_identity(self) -> dict[str, Any]:
        return {"spec": self.provider.spec, "base_url": public_url(self.provider.base_url)}

    def manifest_extra(self) -> dict[str, Any]:
        return super().manifest_extra() | {
            "hidden_states": False,
            "prompt_caching": self.provider.prompt_caching(self.system),
            "api": self.api.model_dump(mode="json", exclude={"base_url"}),
        }

    def groups(self, pending: Sequence[str]) -> list[list[str]]:
        return [list(pending[i : i + GROUP]) for i in range(0, len(pending), GROUP)]

    def prepare(self, pending: Sequence[str]) -> None:
        if self.api.batch and pending:
            jobs = [job for key in pending for job in self.jobs(key)]
            try:
                n = self.runner.prefetch_batch(
                    jobs, batch_state(self.store.root), poll_seconds=self.api.batch_poll_seconds,
                    progress=None if self.quiet else status,
                )  # fmt: skip
            finally:
                self._keep_log()  # the batch's answers are paid for now, whatever happens next
            if n:
                self.store.update(self.name, batch_requests=n)

    def _keep_log(self) -> None:
        if rows := self.runner.drain():
            self.store.write_extra(self.name, "requests", pd.DataFrame(rows, columns=ACCOUNT_COLUMNS))

    def compute(self, group: list[str]) -> Part:
        per_key = [self.jobs(key) for key in group]
        try:
            outcomes = self.runner.run([job for jobs in per_key for job in jobs])
        except BaseException:  # a refusal or an interrupt: what was sent is still accounted
            self._keep_log()
            raise
        if failed := [o for o in outcomes if o.transport_failed]:
            self._keep_log()
            raise AffectlensError(
                f"{len(failed)} of {len(outcomes)} requests to {self.provider.spec} failed after "
                f"{self.api.max_retries} retries (first: {failed[0].reason}); rerun the same command to resume "
                "(answers already received are cached and are not sent again)"
            )
        tables: dict[str, list[pd.DataFrame]] = {}
        start = 0
        for key, jobs in zip(group, per_key, strict=True):
            for name, frame in self.tables(key, outcomes[start : start + len(jobs)]).items():
                tables.setdefault(name, []).append(frame)
            start += len(jobs)
        accounts = pd.DataFrame(self.runner.drain(), columns=ACCOUNT_COLUMNS)
        merged = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
        return Part(tables=merged | {"requests": accounts})

    def write_accounting(self) -> dict[str, Any]:
        """Write the run's requests table; return the accounting for the summary."""
        parts = [
            self.store.merged_table(self.name, "requests"),
            *self.store.extra_tables(self.name, "requests"),
        ]
        accounts = pd.concat(parts, ignore_index=True)
        write_requests(self.store.root, accounts)
        return accounting(accounts, self.provider.model, self.api)

    def plan(self) -> dict[str, Any]:
        """The dry run: requests, how many the cache already holds, tokens and an estimated cost. Sends nothing."""
        self.validate()
        jobs = [job for key in self.keys() for job in self.jobs(key)]
        fresh = [job for job in jobs if not self.runner.cached(job)]  # one cache read per job
        cached = len(jobs) - len(fresh)
        chars = sum(len(j.request.system) + sum(len(t) for _, t in j.request.turns) for j in fresh)
        input_tokens, output_tokens = chars // CHARS_PER_TOKEN, sum(j.request.max_tokens for j in fresh)
        cost = estimate_cost(self.provider.model, input_tokens, output_tokens, batch=self.api.batch,
                             table=load_prices(self.api.prices))  # fmt: skip
        return {
            "spec": self.provider.spec,
            "requests": len(jobs),
            "cached": cached,
            "to_send": len(fresh),
            "input_tokens_estimate": input_tokens,
            "output_tokens_at_most": output_tokens,
            "cost_usd_estimate": None if cost is None else round(cost, 4),
            "prompt_caching": self.provider.prompt_caching(self.system),
            "note": "an estimate, not a bound: input at 4 characters a token (kaomoji and other non-ASCII text "
            "take more), output at its maximum, parse retries and cache writes not counted",
        }


def accounting(accounts: pd.DataFrame, model: str, api: ApiConfig) -> dict[str, Any]:
    """Totals over every attempt of a run: what was sent, what the cache answered, tokens, retries, cost."""
    sent = accounts[~accounts["from_cache"].astype(bool)]
    table = load_prices(api.prices)
    tokens = {k: int(sent[k].sum()) for k in ("input_tokens", "output_tokens", "cached_tokens")}
    by_batch = sent["batch"].astype(bool) if "batch" in sent else pd.Series(False, index=sent.index)
    costs = [
        estimate_cost(model, int(part["input_tokens"].sum()), int(part["output_tokens"].sum()),
                      int(part["cached_tokens"].sum()), batch=batch, table=table)
        for batch, part in ((False, sent[~by_batch]), (True, sent[by_batch]))
    ]  # fmt: skip
    cost = None if None in costs else sum(costs)  # type: ignore[arg-type]
    price = price_of(model, table)
    return {
        "attempts": len(accounts),
        "sent": len(sent),
        "from_cache": int(accounts["from_cache"].astype(bool).sum()),
        "failed_attempts": int((~accounts["ok"].astype(bool)).sum()),
        **tokens,
        "sdk_retries": int(sent["retries"].sum()),
        "cost_usd_estimate": None if cost is None else round(cost, 6),
        "price_usd_per_mtok": None if price is None else list(price),
        "sent_in_batch": int(by_batch.sum()),
    }

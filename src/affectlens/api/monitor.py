"""``monitor``: per-token emotion readings of a model's own replies, and their figure, into a run folder.

The stage computes the readings (stages may not import the report); the figure is drawn here, after the
stage, from the run folder, so a resumed or already finished run redraws it from what is on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectlens.config import MonitorConfig

if TYPE_CHECKING:
    from affectlens.runtime.loading import ModelHandle
    from affectlens.stimuli import PromptSet

READINGS_FIGURE = "readings"  # the figure's stem in the run folder: readings.png and readings.svg


def monitor(model: ModelHandle | str, out: str | Path, *, vectors: str | Path,
            prompts: PromptSet | str | Path | None = None, config: MonitorConfig | None = None,
            quiet: bool = False) -> dict[str, Any]:  # fmt: skip
    """Sample replies to ``prompts`` (the shipped set by default), then read every token of prompt and reply
    on every emotion vector of the vectors run ``vectors`` (same model), at one layer, into run folder ``out``
    (resumed if it exists): ``readings.parquet``, ``replies.parquet``, ``readings.png`` and ``.svg``.

    Returns the summary the manifest records: n_replies, n_tokens, seconds, tokens_per_second, and
    ``mean_reading`` (each emotion's mean over reply tokens).
    """
    from affectlens.api import _handle, _prompts
    from affectlens.reporting.figures.monitor import draw
    from affectlens.stages.monitor import check_vectors_run
    from affectlens.stages.monitor import monitor as run
    from affectlens.store.runs import read_monitor

    prompt_set = _prompts(prompts)
    check_vectors_run(str(vectors))  # before a model spec is loaded
    summary = run(_handle(model), str(out), str(vectors), prompt_set, config or MonitorConfig(), quiet=quiet)
    result = read_monitor(out)
    draw(result.readings, result.entry["emotions"], Path(out) / READINGS_FIGURE, layer=result.entry["layer"])
    return summary


__all__ = ["READINGS_FIGURE", "monitor"]

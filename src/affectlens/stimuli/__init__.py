"""Stimuli: the prompts, the face catalogue, the priming exchanges, the emotion-story corpus and the lexicon.

Shipped data lives in ``data/`` as JSONL (one record a line). User files of the same schema are validated
line by line against the record kinds (:class:`Prompt`, :class:`~affectlens.stimuli.corpus.Story`, ...) by
:func:`read_records`, and every error names the file and the line.
"""

from affectlens.stimuli.jsonl import content_hash, read_jsonl, read_records
from affectlens.stimuli.lexicon import Lexicon, load_lexicon
from affectlens.stimuli.prompts import (
    DEFAULT_PROMPTS,
    Prompt,
    PromptSet,
    load_catalogue,
    load_primer,
    load_prompts,
)

__all__ = [
    "DEFAULT_PROMPTS",
    "Lexicon",
    "Prompt",
    "PromptSet",
    "content_hash",
    "load_catalogue",
    "load_lexicon",
    "load_primer",
    "load_prompts",
    "read_jsonl",
    "read_records",
]

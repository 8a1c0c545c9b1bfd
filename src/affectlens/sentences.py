"""Sentences and the emoji in them: the rules behind the emoji-to-sentence ratio (ESR) and the kaomoji rate.

**The sentence rule.** A text is split at line breaks. Within a line, a sentence ends after a run of terminal
punctuation (``.``, ``!``, ``?``, ``…``, with any closing quotes or brackets) that is followed by whitespace
or the end of the line; emoji that follow the punctuation, before the next word, belong to the sentence they
close ("Great! 🎉 See you." is two sentences, the first with an emoji). A run of emoji followed by whitespace
and a capital letter also ends a sentence ("Great party 🎉 See you" is two). Fragments with no letter, digit
or emoji (stray punctuation) are dropped; an emoji-only line is a sentence with an emoji. Abbreviations
("e.g. this") split too: the rule is the same for every model, which is what a comparison needs.

``emoji_sentence_ratio`` pools: the share of all sentences of all texts that hold at least one emoji.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import regex

from affectlens.faces import extract_face, is_emoji_cluster

_GRAPHEME = regex.compile(r"\X")
_TERMINAL = frozenset(".!?…")
_CLOSING = frozenset("\"'”’)]»")
_CONTENT = regex.compile(r"[\p{L}\p{N}]")


def _run_end(clusters: list[str], i: int) -> tuple[int, int, bool]:
    """From ``i``, past spaces and emoji: (index after the run, index after its last emoji, saw a space)."""
    j, end, saw_space = i, i, False
    while j < len(clusters) and (clusters[j].isspace() or is_emoji_cluster(clusters[j])):
        saw_space |= clusters[j].isspace()
        if is_emoji_cluster(clusters[j]):
            end = j + 1
        j += 1
    return j, end, saw_space


def _line_breaks(clusters: list[str]) -> list[tuple[int, int]]:
    """(start, stop) cluster indices of the pieces of one line, split by the sentence rule."""
    pieces, begin, i = [], 0, 0
    while i < len(clusters):
        c = clusters[i]
        i += 1
        if c in _TERMINAL:
            while i < len(clusters) and (clusters[i] in _TERMINAL or clusters[i] in _CLOSING):
                i += 1
            j, end, saw_space = _run_end(clusters, i)
            if j == len(clusters) or saw_space:
                pieces.append((begin, end))
                begin = i = j
        elif is_emoji_cluster(c):
            j, end, saw_space = _run_end(clusters, i)
            if saw_space and j < len(clusters) and clusters[j][:1].isupper():
                pieces.append((begin, end))
                begin = i = j
    pieces.append((begin, len(clusters)))
    return pieces


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each sentence of ``text`` (end exclusive, outer spaces excluded)."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for line in text.split("\n"):
        clusters = _GRAPHEME.findall(line)
        starts = [0]
        for c in clusters:
            starts.append(starts[-1] + len(c))
        for begin, stop in _line_breaks(clusters):
            piece = line[starts[begin] : starts[stop]]
            if _CONTENT.search(piece) or any(is_emoji_cluster(c) for c in clusters[begin:stop]):
                lead = len(piece) - len(piece.lstrip())
                spans.append((offset + starts[begin] + lead, offset + starts[begin] + len(piece.rstrip())))
        offset += len(line) + 1
    return spans


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def has_emoji(text: str) -> bool:
    return any(is_emoji_cluster(c) for c in _GRAPHEME.findall(text))


def emoji_in(text: str) -> list[str]:
    """The emoji grapheme clusters of ``text``, in order."""
    return [c for c in _GRAPHEME.findall(text) if is_emoji_cluster(c)]


def has_kaomoji(text: str) -> bool:
    """True when a well-formed kaomoji opens the text or any bracket group in it (faces.py's rules)."""
    for i, ch in enumerate(text):
        if i == 0 or ch in "(（[{":
            face = extract_face(text[i:])
            if face is not None and face.kind == "kaomoji" and face.well_formed:
                return True
    return False


def sentence_counts(text: str) -> tuple[int, int]:
    """(sentences, sentences holding at least one emoji)."""
    sentences = split_sentences(text)
    return len(sentences), sum(has_emoji(s) for s in sentences)


def emoji_sentence_ratio(texts: Iterable[str]) -> float:
    """ESR: the share of sentences, pooled over ``texts``, that hold at least one emoji (NaN: no sentences)."""
    total = with_emoji = 0
    for text in texts:
        n, k = sentence_counts(text)
        total, with_emoji = total + n, with_emoji + k
    return with_emoji / total if total else float("nan")


def listed_items(reply: str) -> list[str]:
    """The tokens a reply lists: each emoji on its own, and each word lowercased without punctuation."""
    items: list[str] = []
    for chunk in regex.split(r"[\s,;/|]+", reply):
        emoji = emoji_in(chunk)
        items.extend(emoji)
        word = "".join(c for c in _GRAPHEME.findall(chunk) if not is_emoji_cluster(c))
        word = regex.sub(r"^[\p{P}\p{S}\d]+|[\p{P}\p{S}]+$", "", word).lower()
        if _CONTENT.search(word):
            items.append(word)
    return items


def top_items(replies: Sequence[Sequence[str]], k: int = 50) -> list[tuple[str, int]]:
    """The ``k`` most frequent items over replies (ties: alphabetical), with their counts."""
    counts: dict[str, int] = {}
    for items in replies:
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def is_emoji_item(item: str) -> bool:
    """A listed item that is one emoji (``listed_items`` gives each emoji its own item)."""
    return bool(item) and all(is_emoji_cluster(c) for c in _GRAPHEME.findall(item))

"""Shipped stimuli (prompts, face catalogue, primer, emotion corpus) and validation of user files."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from affectlens.cells import PAD9, Cell, CellSet
from affectlens.errors import AffectlensError
from affectlens.faces import canonicalize, extract_face
from affectlens.stimuli import (
    DEFAULT_PROMPTS,
    content_hash,
    load_catalogue,
    load_primer,
    load_prompts,
    read_jsonl,
    read_records,
)
from affectlens.stimuli.jsonl import DATA_DIR, Name, Ref, Str, Text, record

EMOTIONS_DIR = DATA_DIR / "emotions"


def _records(name: str) -> list[dict]:
    text = (EMOTIONS_DIR / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


# --- the shipped prompt set --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompts():
    return load_prompts()


@pytest.fixture(scope="module")
def prompt_frame(prompts):
    return prompts.to_frame()


def test_prompt_counts(prompts, prompt_frame):
    assert len(prompts) >= 180
    counts = prompt_frame["cell"].value_counts().to_dict()
    assert set(counts) == set(PAD9.codes)
    assert all(counts[code] >= 20 for code in PAD9.codes), counts


def test_prompt_ids_unique(prompts):
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)


def test_prompt_lengths_balanced_across_cells(prompt_frame):
    means = prompt_frame.groupby("cell")["n_chars"].mean()
    assert means.max() / means.min() <= 1.25, means.to_dict()


def test_prompt_domains(prompts):
    domains = {p.domain for p in prompts}
    assert None not in domains
    assert len(domains) >= 8, domains


def test_prompt_text_lower_case_and_nonempty(prompts):
    for p in prompts:
        assert p.text.strip(), p.id
        assert p.text == p.text.lower(), p.id


def test_prompt_hash_stable_and_independent_of_location(prompts, tmp_path):
    again = load_prompts()
    assert again.hash == prompts.hash
    assert again.hash == content_hash(
        {"id": p.id, "cell": p.cell, "text": p.text, "dominance": p.dominance, "domain": p.domain}
        for p in prompts
    )
    copy = tmp_path / "copy.jsonl"
    shutil.copyfile(DEFAULT_PROMPTS, copy)
    from_copy = load_prompts(copy)
    assert from_copy.prompts == prompts.prompts
    assert from_copy.hash == prompts.hash
    assert from_copy.source == str(copy)


def test_prompt_hash_changes_with_content(prompts, tmp_path):
    lines = DEFAULT_PROMPTS.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["text"] += " indeed"
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n", encoding="utf-8")
    assert load_prompts(changed).hash != prompts.hash


def test_content_hash_is_order_and_key_order_sensitive_only_to_content():
    a = [{"x": 1, "y": "é"}, {"x": 2}]
    b = [{"y": "é", "x": 1}, {"x": 2}]
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(list(reversed(a)))
    assert re.fullmatch(r"[0-9a-f]{16}", content_hash(a))


# --- validation of user files ------------------------------------------------------------------------------

GOOD = [
    {"id": "a1", "cell": "LP", "text": "the tea is warm and the rain is soft"},
    {"id": "a2", "cell": "LN", "text": "the shop closed before i got there"},
]


def _write(path: Path, lines: list[str | dict]) -> Path:
    path.write_text(
        "".join((json.dumps(x, ensure_ascii=False) if isinstance(x, dict) else x) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def _error(path: Path) -> str:
    with pytest.raises(AffectlensError) as info:
        load_prompts(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("bad", "culprit"),
    [
        ({"id": "a3", "cell": "XX", "text": "what is this"}, "'XX'"),
        ({"id": "a1", "cell": "NB", "text": "the same id again"}, "'a1'"),
        ({"id": "a3", "cell": "NB", "text": ""}, "'a3'"),
        ({"id": "a3", "cell": "NB", "text": "   "}, "'a3'"),
        ({"id": "a3", "cell": "NB"}, "'text'"),
        ({"id": "a3", "cell": "NB", "text": "ok", "mood": "x"}, "mood"),
        ({"id": 3, "cell": "NB", "text": "ok"}, "'id'"),
    ],
    ids=[
        "unknown-cell",
        "duplicate-id",
        "empty-text",
        "blank-text",
        "missing-text",
        "unknown-field",
        "int-id",
    ],
)
def test_bad_record_names_file_line_and_culprit(tmp_path, bad, culprit):
    path = _write(tmp_path / "user.jsonl", [*GOOD, bad])
    message = _error(path)
    assert f"{path}:3:" in message
    assert culprit in message


def test_duplicate_id_names_first_line(tmp_path):
    path = _write(tmp_path / "user.jsonl", [*GOOD, {"id": "a2", "cell": "NB", "text": "again"}])
    assert "line 2" in _error(path)


def test_bad_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "user.jsonl"
    path.write_bytes(
        b"".join(json.dumps(r).encode() + b"\n" for r in GOOD)
        + b'{"id": "a3", "cell": "NB", "text": "caf\xff"}\n'
    )
    message = _error(path)
    assert f"{path}:3:" in message
    assert "UTF-8" in message


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "user.jsonl", [*GOOD, '{"id": "a3", "cell": "NB", "text": "unclosed'])
    message = _error(path)
    assert f"{path}:3:" in message
    assert "JSON" in message


def test_non_object_line_names_file_and_line(tmp_path):
    path = _write(tmp_path / "user.jsonl", [*GOOD, '["a3", "NB", "a list"]'])
    message = _error(path)
    assert f"{path}:3:" in message
    assert "list" in message


def test_line_numbers_count_blank_lines(tmp_path):
    path = _write(tmp_path / "user.jsonl", [GOOD[0], "", {"id": "a3", "cell": "XX", "text": "x"}])
    assert f"{path}:3:" in _error(path)


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"], ids=["empty", "blank-lines"])
def test_empty_file_names_file(tmp_path, content):
    path = tmp_path / "user.jsonl"
    path.write_bytes(content)
    message = _error(path)
    assert str(path) in message
    assert "no records" in message


def test_missing_file_and_folder(tmp_path):
    assert str(tmp_path / "nope.jsonl") in _error(tmp_path / "nope.jsonl")
    assert str(tmp_path) in _error(tmp_path)


def test_good_user_file_with_bom_and_crlf(tmp_path):
    path = tmp_path / "user.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(r).encode() for r in GOOD) + b"\r\n")
    loaded = load_prompts(path)
    assert [p.id for p in loaded] == ["a1", "a2"]


def test_user_file_with_custom_cells(tmp_path):
    custom = CellSet(
        "test-posneg",
        (
            Cell("POS", "positive", "positive", 1.0, 0.0, 0.0, "#c87f55"),
            Cell("NEG", "negative", "negative", -1.0, 0.0, 0.0, "#5194da"),
        ),
    )
    path = _write(tmp_path / "user.jsonl", [{"id": "x", "cell": "POS", "text": "a good day"}])
    assert [p.cell for p in load_prompts(path, cells=custom)] == ["POS"]
    with pytest.raises(AffectlensError, match="'POS'"):
        load_prompts(path)


def test_error_messages_say_what_is_wrong(tmp_path):
    cases = [
        ({"id": "a3", "cell": "NB"}, "missing field 'text'"),
        ({"id": 3, "cell": "NB", "text": "ok"}, "non-string field 'id' (got int)"),
        ({"id": "a3", "cell": "NB", "text": "ok", "dominance": 1}, "non-string field 'dominance' (got int)"),
        ({"id": "a3", "cell": "NB", "text": "ok", "zz": 1, "mood": "x"}, "unknown field(s) mood, zz"),
        ({"id": " ", "cell": "NB", "text": "ok"}, "empty id"),
        ({"id": "a3", "cell": "NB", "text": " "}, "empty text for 'a3'"),
        ({"id": "a3", "cell": "XX", "text": "ok"}, "unknown cell 'XX'; expected one of HP-D, HP-S, LP"),
        ({"id": "a1", "cell": "NB", "text": "again"}, "duplicate id 'a1' (first on line 1)"),
    ]
    for bad, expected in cases:
        path = _write(tmp_path / "user.jsonl", [*GOOD, bad])
        assert _error(path).startswith(f"{path}:3: {expected}"), (bad, _error(path))


@record
class _Pet:
    name: Name
    kind: Ref
    note: Str = ""


@record
class _Page:
    id: Name
    text: Text


def test_read_records_is_one_loader_for_any_record_kind(tmp_path):
    path = _write(tmp_path / "pets.jsonl", [{"name": "rex", "kind": "dog"}, {"name": "tom", "kind": "cat"}])
    pets = read_records(path, _Pet, key="name", what="pet", context={"kind": ["cat", "dog"]})
    assert pets == [_Pet("rex", "dog"), _Pet("tom", "cat")]
    assert read_records(path, _Pet, key="name")[1].kind == "cat"  # no known values given: any value
    _write(path, [{"name": "rex", "kind": "dog"}, {"name": "rex", "kind": "cat", "note": "again"}])
    with pytest.raises(AffectlensError, match=re.escape(f"{path}:2: duplicate pet 'rex' (first on line 1)")):
        read_records(path, _Pet, key="name", what="pet")
    assert len(read_records(path, _Pet, key=None)) == 2
    _write(path, [{"id": "p1", "text": "one"}, {"id": "p2", "text": ""}])
    with pytest.raises(AffectlensError, match=re.escape(f"{path}:2: empty text for 'p2'")):
        read_records(path, _Page)
    assert _Page("p3", "") == _Page(id="p3", text="")  # building a record in code validates nothing


# JSON allows U+2028, U+2029 and U+0085 raw inside strings, so JSONL is split on newlines only.
@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_unicode_line_separator_inside_string_is_valid(tmp_path, separator):
    record = {"id": "a3", "cell": "NB", "text": f"one{separator}two"}
    path = _write(tmp_path / "user.jsonl", [*GOOD, record])
    assert [number for number, _ in read_jsonl(path)] == [1, 2, 3]
    assert load_prompts(path).prompts[2].text == record["text"]


# --- face catalogue and primer -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


def test_catalogue_size_canonical_unique(catalogue):
    assert len(catalogue) >= 150
    assert all(canonicalize(face) == face for face in catalogue)
    assert len(set(catalogue)) == len(catalogue)


def test_catalogue_file_is_canonical_and_has_no_duplicates():
    # load_catalogue drops duplicates silently; the shipped file should not rely on that.
    lines = [line for line in (DATA_DIR / "kaomoji.txt").read_text(encoding="utf-8").split("\n") if line]
    assert all(canonicalize(line) == line for line in lines)
    assert len(set(lines)) == len(lines)
    assert load_catalogue() == lines


def test_catalogue_from_user_file(tmp_path):
    path = tmp_path / "faces.txt"
    path.write_text("（＾▽＾）\n\n(^▽^)\nヽ(´ー｀)ノ\n", encoding="utf-8")
    assert load_catalogue(path) == ["(^▽^)", "(´ー`)"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(AffectlensError, match=re.escape(str(empty))):
        load_catalogue(empty)


def test_primer(catalogue):
    primer = load_primer()
    assert len(primer) == 9
    assert [exchange["cell"] for exchange in primer] == PAD9.codes
    for exchange in primer:
        face = extract_face(exchange["reply"])
        assert face is not None, exchange
        assert face.text == exchange["face"]
        assert exchange["face"] in catalogue
        assert exchange["user"].strip()


def test_primer_rejects_incomplete_line_and_unknown_fields(tmp_path):
    path = tmp_path / "primer.jsonl"
    good = {"cell": "LP", "face": "(˘ω˘)", "user": "hi", "reply": "(˘ω˘) hi"}
    _write(path, [good, {"cell": "LP"}])
    with pytest.raises(AffectlensError, match=re.escape(f"{path}:2: missing field 'face'")):
        load_primer(path)
    _write(path, [good, {**good, "mood": "calm"}])
    with pytest.raises(AffectlensError, match=re.escape(f"{path}:2: unknown field(s) mood")):
        load_primer(path)
    _write(path, [good])
    assert load_primer(path) == [good]


# --- the emotion corpus ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emotions():
    return _records("emotions.jsonl")


@pytest.fixture(scope="module")
def topics():
    return _records("topics.jsonl")


@pytest.fixture(scope="module")
def stories():
    return _records("stories.jsonl")


def test_emotions(emotions):
    assert len(emotions) == 20
    names = [e["name"] for e in emotions]
    assert len(set(names)) == len(names)
    per_cell = Counter(e["cell"] for e in emotions)
    assert set(per_cell) == set(PAD9.codes)
    assert all(n >= 2 for n in per_cell.values()), per_cell
    for e in emotions:
        assert -1 <= e["valence"] <= 1, e["name"]
        assert -1 <= e["arousal"] <= 1, e["name"]
        assert e["banned"] and all(isinstance(w, str) and w for w in e["banned"]), e["name"]


def test_emotion_coordinates_agree_with_cell_signs(emotions):
    # An emotion's valence must not contradict its cell's valence sign (zero cells allow either side).
    for e in emotions:
        cell = PAD9[e["cell"]]
        if cell.valence:
            assert e["valence"] * cell.valence > 0, e["name"]


def test_topics(topics):
    assert len(topics) == 12
    ids = [t["id"] for t in topics]
    assert len(set(ids)) == 12


def test_stories_one_per_emotion_and_topic(emotions, topics, stories):
    names = {e["name"] for e in emotions}
    topic_ids = {t["id"] for t in topics}
    ids = [s["id"] for s in stories]
    assert len(set(ids)) == len(ids)
    assert {s["emotion"] for s in stories} == names
    per_emotion = Counter(s["emotion"] for s in stories)
    assert all(n == 12 for n in per_emotion.values()), per_emotion
    for name in names:
        assert sorted(s["topic"] for s in stories if s["emotion"] == name) == sorted(topic_ids), name
    assert len(stories) == 20 * 12


def test_story_lengths(stories):
    for s in stories:
        n_words = len(s["text"].split())
        assert 80 <= n_words <= 150, (s["id"], n_words)


_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def _words(text: str) -> set[str]:
    """Every whole word, lower-cased, plus the part before an apostrophe (so "fun's" also yields "fun")."""
    out = set()
    for word in _WORD.findall(text.lower()):
        out.add(word)
        out.add(re.split(r"['’]", word)[0])
    return out


def test_banned_word_helper():
    assert "fun" in _words("It was Fun's day.")
    assert "fun" in _words("FUN!")
    assert "fun" not in _words("a funeral and refund")
    assert "play" in _words("a role-play game")


def test_no_story_uses_its_banned_words(emotions, stories):
    banned = {e["name"]: {w.lower() for w in e["banned"]} for e in emotions}
    offenders = []
    for s in stories:
        hits = _words(s["text"]) & banned[s["emotion"]]
        if hits:
            offenders.append((s["id"], sorted(hits)))
    assert not offenders


def test_neutral_dialogues():
    neutral = _records("neutral.jsonl")
    assert len(neutral) == 40
    ids = [d["id"] for d in neutral]
    assert len(set(ids)) == len(ids)
    assert all(d["text"].strip() for d in neutral)


def test_implicit_scenarios(emotions):
    implicit = _records("implicit.jsonl")
    assert len(implicit) == 12
    names = {e["name"] for e in emotions}
    ids = [s["id"] for s in implicit]
    assert len(set(ids)) == len(ids)
    for scenario in implicit:
        assert scenario["emotion"] in names, scenario["id"]
        assert scenario["text"].strip(), scenario["id"]

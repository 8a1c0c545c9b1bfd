"""The locked BoL affect lexicon: the shipped words, the distribution math, the judge schema, file checks."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from affectlens.cells import PAD9
from affectlens.errors import AffectlensError
from affectlens.stimuli import Lexicon, load_lexicon
from affectlens.stimuli.lexicon import DEFAULT_LEXICON


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return load_lexicon()


# --- the shipped lexicon -----------------------------------------------------------------------------------


def test_shipped_lexicon_loads(lexicon):
    assert lexicon.version == "1"
    assert 45 <= len(lexicon.words) <= 60
    assert lexicon.weights.shape == (len(lexicon.words), len(PAD9))
    assert lexicon.cells is PAD9
    assert re.fullmatch(r"[0-9a-f]{16}", lexicon.hash)
    assert lexicon.describe() == {"version": "1", "hash": lexicon.hash, "n_words": len(lexicon.words)}
    assert load_lexicon(DEFAULT_LEXICON).hash == lexicon.hash


def test_every_cell_tops_at_least_four_words(lexicon):
    tops = Counter(PAD9.codes[i] for i in lexicon.weights.argmax(axis=1))
    assert set(tops) == set(PAD9.codes)
    assert all(tops[code] >= 4 for code in PAD9.codes), tops


def test_rows_are_distributions(lexicon):
    assert (lexicon.weights >= 0).all()
    np.testing.assert_allclose(lexicon.weights.sum(axis=1), 1.0, atol=1e-9)
    assert not lexicon.weights.flags.writeable


def test_words_are_plain_lowercase_and_unique(lexicon):
    assert len(set(lexicon.words)) == len(lexicon.words)
    for word in lexicon.words:
        # no emoji, no kaomoji, no spaces or punctuation: lowercase ASCII letters only
        assert re.fullmatch(r"[a-z]+", word), word
        assert word.isascii() and word == word.lower()


def test_shipped_file_has_header_then_words():
    lines = [json.loads(line) for line in DEFAULT_LEXICON.read_text(encoding="utf-8").splitlines() if line]
    assert lines[0] == {"version": "1"}
    assert all(set(line) == {"word", "weights"} for line in lines[1:])


def test_weight_of(lexicon):
    row = lexicon.weight_of("gleeful")
    assert row.shape == (len(PAD9),)
    assert row[PAD9.index("HP-S")] == pytest.approx(0.6)
    assert row[PAD9.index("HP-D")] == pytest.approx(0.4)
    assert row.sum() == pytest.approx(1.0)
    with pytest.raises(AffectlensError, match="unknown lexicon word 'gleefull'.*gleeful"):
        lexicon.weight_of("gleefull")


# --- distribution ------------------------------------------------------------------------------------------


def test_one_answer_is_the_mean_of_its_rows(lexicon):
    got = lexicon.distribution([["gleeful", "wistful"]])
    want = (lexicon.weight_of("gleeful") + lexicon.weight_of("wistful")) / 2
    np.testing.assert_allclose(got, want)
    # by hand: gleeful HP-S .6 HP-D .4; wistful LN .55 LP .3 NP .1 NB .05
    by_hand = dict(zip(PAD9.codes, got, strict=True))
    assert by_hand == pytest.approx(
        {
            "HP-D": 0.2,
            "HP-S": 0.3,
            "LP": 0.15,
            "NP": 0.05,
            "HN-D": 0,
            "HN-S": 0,
            "LN": 0.275,
            "NB": 0.025,
            "HB": 0,
        }
    )
    assert got.sum() == pytest.approx(1.0)


def test_answers_are_averaged_each_with_equal_weight(lexicon):
    # answer 1 has one word, answer 2 three: each answer counts half, whatever its length
    got = lexicon.distribution([["sad"], ["confused", "puzzled", "neutral"]])
    second = (lexicon.weight_of("confused") + lexicon.weight_of("puzzled") + lexicon.weight_of("neutral")) / 3
    np.testing.assert_allclose(got, (lexicon.weight_of("sad") + second) / 2)
    assert got.sum() == pytest.approx(1.0)
    # by hand for the sad cell: sad .9 (answer 1), none in answer 2
    assert got[PAD9.index("LN")] == pytest.approx(0.45)
    # the neutral cell: sad .05; confused .05 + puzzled .15 + neutral .95 over 3
    assert got[PAD9.index("NB")] == pytest.approx((0.05 + (0.05 + 0.15 + 0.95) / 3) / 2)


def test_single_word_answer_is_its_row(lexicon):
    np.testing.assert_allclose(lexicon.distribution([["calm"]]), lexicon.weight_of("calm"))
    np.testing.assert_allclose(lexicon.distribution((("calm",), ("calm",))), lexicon.weight_of("calm"))


def test_repeated_word_in_one_answer_counts_once(lexicon):
    np.testing.assert_allclose(
        lexicon.distribution([["sad", "sad", "calm"]]), lexicon.distribution([["sad", "calm"]])
    )


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ([], "no judge answers"),
        ([[]], "judge answer 1: no words"),
        ([["sad"], []], "judge answer 2: no words"),
        ([["sad", "elatedd"]], "judge answer 1: unknown lexicon word 'elatedd'"),
        ([["sad"], ["(^_^)"]], "judge answer 2: unknown lexicon word"),
        (["sad"], "judge answer 1: expected a list of words, got str"),
        ("sad", "expected a list of judge answers, got str"),
        ([[1]], "judge answer 1: a word must be a string"),
    ],
)
def test_distribution_rejects_bad_input(lexicon, choices, message):
    with pytest.raises(AffectlensError, match=re.escape(message)):
        lexicon.distribution(choices)


# --- the judge's answer schema -----------------------------------------------------------------------------


def _valid(schema: dict, answer) -> bool:
    """A check of the keywords the schema uses (jsonschema is not installed)."""
    if schema["type"] != "object" or not isinstance(answer, dict):
        return False
    if any(key not in answer for key in schema["required"]):
        return False
    if schema["additionalProperties"] is False and set(answer) - set(schema["properties"]):
        return False
    words = schema["properties"]["words"]
    value = answer["words"]
    if not isinstance(value, list) or not words["minItems"] <= len(value) <= words["maxItems"]:
        return False
    return all(isinstance(w, str) and w in words["items"]["enum"] for w in value)


def test_schema_structure(lexicon):
    schema = lexicon.json_schema()
    assert schema == {
        "type": "object",
        "properties": {
            "words": {
                "type": "array",
                "items": {"type": "string", "enum": list(lexicon.words)},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["words"],
        "additionalProperties": False,
    }
    json.dumps(schema)  # serialisable as is
    assert lexicon.json_schema(max_words=2)["properties"]["words"]["maxItems"] == 2


def test_schema_accepts_good_and_rejects_bad_answers(lexicon):
    schema = lexicon.json_schema()
    assert _valid(schema, {"words": ["gleeful"]})
    assert _valid(schema, {"words": ["gleeful", "wistful", "baffled"]})
    assert not _valid(schema, {"words": []})
    assert not _valid(schema, {"words": ["sad", "calm", "weary", "gloomy"]})
    assert not _valid(schema, {"words": ["melancholic"]})
    assert not _valid(schema, {"words": ["sad"], "why": "because"})
    assert not _valid(schema, {})


@pytest.mark.parametrize("max_words", [0, -1, 1.5, True, "3"])
def test_schema_rejects_bad_max_words(lexicon, max_words):
    with pytest.raises(AffectlensError, match="max_words"):
        lexicon.json_schema(max_words=max_words)


# --- user files --------------------------------------------------------------------------------------------

GOOD = [
    {"version": "test-1"},
    {"word": "gleeful", "weights": {"HP-S": 0.6, "HP-D": 0.4}},
    {"word": "glum", "weights": {"LN": 1}},
]


def _write(tmp_path: Path, lines, name: str = "lex.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_user_file_loads(tmp_path):
    lexicon = load_lexicon(_write(tmp_path, GOOD))
    assert lexicon.version == "test-1"
    assert lexicon.words == ("gleeful", "glum")
    assert lexicon.weight_of("glum")[PAD9.index("LN")] == 1.0
    np.testing.assert_allclose(lexicon.distribution([["gleeful", "glum"]]).sum(), 1.0)
    assert lexicon.source.endswith("lex.jsonl")


def test_user_file_blank_lines_and_tolerance(tmp_path):
    third = 1 / 3
    lines = [GOOD[0], "", {"word": "meh", "weights": {"NB": round(third, 7), "LN": third, "LP": third}}]
    assert load_lexicon(_write(tmp_path, lines)).words == ("meh",)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([GOOD[0], {"word": "odd", "weights": {"XX": 1.0}}], ":2: unknown cell 'XX'"),
        ([GOOD[0], {"word": "odd", "weights": {"LN": 1.2, "LP": -0.2}}], ":2: negative weight -0.2"),
        (
            [GOOD[0], GOOD[1], {"word": "odd", "weights": {"LN": 0.5, "LP": 0.4}}],
            ":3: weights of 'odd' sum to",
        ),
        ([GOOD[0], {"word": "odd", "weights": {"LN": 0.5, "LP": 0.500002}}], ":2: weights of 'odd' sum to"),
        ([GOOD[0], GOOD[1], GOOD[2], GOOD[1]], ":4: duplicate word 'gleeful' (first on line 2)"),
        ([GOOD[0]], ": holds no words"),
        ([GOOD[1], GOOD[2]], ':1: the first line must be the header {"version": "..."}'),
        ([{"version": ""}, GOOD[1]], ":1: version must be a non-empty string"),
        ([{"version": 1}, GOOD[1]], ":1: version must be a non-empty string"),
        ([{"version": "1", "date": "x"}, GOOD[1]], ":1: the first line must be the header"),
        ([GOOD[0], {"word": "odd"}], ":2: missing field 'weights'"),
        ([GOOD[0], {"weights": {"LN": 1}}], ":2: missing field 'word'"),
        ([GOOD[0], {"word": "odd", "weights": {"LN": 1}, "note": "x"}], ":2: unknown field(s) note"),
        ([GOOD[0], {"word": 7, "weights": {"LN": 1}}], ":2: non-string field 'word'"),
        ([GOOD[0], {"word": "Gleeful", "weights": {"LN": 1}}], ":2: word 'Gleeful' must be lowercase"),
        ([GOOD[0], {"word": "two words", "weights": {"LN": 1}}], ":2: word 'two words' must be lowercase"),
        ([GOOD[0], {"word": "(^_^)", "weights": {"LN": 1}}], ":2: word '(^_^)' must be lowercase"),
        ([GOOD[0], {"word": "odd", "weights": {}}], ":2: weights of 'odd' must be a non-empty object"),
        ([GOOD[0], {"word": "odd", "weights": [1.0]}], ":2: weights of 'odd' must be a non-empty object"),
        ([GOOD[0], {"word": "odd", "weights": {"LN": "1"}}], ":2: weight of 'odd' for LN must be a number"),
        ([GOOD[0], {"word": "odd", "weights": {"LN": True}}], ":2: weight of 'odd' for LN must be a number"),
        ([GOOD[0], '{"word": "odd", "weights": {"LN": NaN}}'], ":2: weight of 'odd' for LN must be a number"),
        ([GOOD[0], "not json"], ":2: not valid JSON"),
        ([GOOD[0], "[1, 2]"], ":2: expected a JSON object"),
    ],
)
def test_bad_user_file(tmp_path, lines, message):
    path = _write(tmp_path, lines)
    with pytest.raises(AffectlensError) as info:
        load_lexicon(path)
    text = str(info.value)
    assert text.startswith(str(path)), text
    assert message in text, text
    assert "\n" not in text


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"version": "1"}\n{"word": "caf\xe9", "weights": {"LP": 1}}\n')
    with pytest.raises(AffectlensError, match=re.escape(f"{path}:2: not valid UTF-8")):
        load_lexicon(path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(AffectlensError, match=re.escape(f"{path}: holds no records")):
        load_lexicon(path)


def test_missing_file(tmp_path):
    with pytest.raises(AffectlensError, match="no such file"):
        load_lexicon(tmp_path / "nope.jsonl")


# --- the content hash --------------------------------------------------------------------------------------


def test_hash_changes_with_a_weight(tmp_path):
    base = load_lexicon(_write(tmp_path, GOOD, "a.jsonl"))
    changed = [GOOD[0], {"word": "gleeful", "weights": {"HP-S": 0.7, "HP-D": 0.3}}, GOOD[2]]
    assert load_lexicon(_write(tmp_path, changed, "b.jsonl")).hash != base.hash


def test_hash_is_of_content_not_bytes(tmp_path):
    base = load_lexicon(_write(tmp_path, GOOD, "a.jsonl"))
    # same content: keys reordered, an explicit zero weight, an int written as a float, another version label
    same = [
        {"version": "test-2"},
        {"weights": {"HP-D": 0.4, "HP-S": 0.6, "LN": 0}, "word": "gleeful"},
        {"word": "glum", "weights": {"LN": 1.0}},
    ]
    other = load_lexicon(_write(tmp_path, same, "b.jsonl"))
    assert other.hash == base.hash
    assert other.version != base.version
    # the word order is part of the content (it fixes the rows and the schema's enum)
    swapped = load_lexicon(_write(tmp_path, [GOOD[0], GOOD[2], GOOD[1]], "c.jsonl"))
    assert swapped.hash != base.hash


def test_shipped_hash_changes_when_a_shipped_weight_changes(tmp_path, lexicon):
    lines = DEFAULT_LEXICON.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[1])
    codes = sorted(record["weights"], key=lambda c: -record["weights"][c])
    record["weights"][codes[0]] -= 0.05
    record["weights"][codes[1]] += 0.05
    lines[1] = json.dumps(record)
    edited = load_lexicon(_write(tmp_path, lines))
    assert edited.words == lexicon.words
    assert edited.hash != lexicon.hash

"""Face extraction and canonicalization: the table of cases, the issue's examples, and property tests."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from affectlens.faces import (
    GLYPH_LETTERS,
    canonicalize,
    extract_face,
    face_settled,
    fold_width,
    is_emoji_cluster,
    is_well_formed,
)
from affectlens.stimuli import load_catalogue

CASES_PATH = Path(__file__).parent / "data" / "face_cases.jsonl"
CASES = [json.loads(line) for line in CASES_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]
CATALOGUE = load_catalogue()

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters the rules care about, mixed into arbitrary text so that hypothesis reaches them often.
SPECIAL_CHARS = [
    *"\u200b\u200c\u200d\u2060\ufeff\u200e\u200f\u202a\u202e\u2066\u00ad",  # Cf: invisible format characters
    *"\ufe0f\ufe0e\u20e3",  # variation selectors, combining keycap
    *"\u0301\u0300\u0308\u0345\u3099",  # combining marks
    *" \t\n\r\u3000\u00a0\u2028",  # whitespace, including ideographic space
    *"()[]{}（）［］｛｝＾＿ｰ･ヽノ´｀°□╯︵┻━ω▽・ಥ",  # kaomoji parts, full-width brackets
    *"*#_>.,!?;:'\"",  # markdown markers, sentence punctuation
    "\U0001f468",  # man
    "\U0001f469",  # woman
    "\U0001f467",  # girl
    "\U0001f44d",  # thumbs up
    "\U0001f3fd",  # skin tone
    "\U0001f1ef",  # regional indicator J
    "\U0001f1f5",  # regional indicator P
    "\u2764",  # heavy black heart (text presentation by default)
    "\U0001f3f4",  # black flag
    "\U000e0067",  # tag g
    "\U000e007f",  # cancel tag
    *"aeT1",
]
BROAD_ALPHABET = st.one_of(
    st.characters(codec=None),  # any code point except surrogates
    st.sampled_from(SPECIAL_CHARS),
    st.characters(min_codepoint=0xFF01, max_codepoint=0xFF65),  # full-width forms
    st.characters(categories=["Mn", "Me", "Cf", "So"]),
)
BROAD_TEXT = st.text(alphabet=BROAD_ALPHABET, max_size=24)


# --- the table of cases ------------------------------------------------------------------------------------


def test_case_table_is_complete():
    assert len(CASES) == 183
    assert all(set(case) == {"reply", "face", "kind"} for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{i + 1}:{c['reply'][:20]!r}" for i, c in enumerate(CASES)])
def test_face_case_table(case):
    face = extract_face(case["reply"])
    got = (face.text, face.kind) if face is not None else (None, None)
    assert got == (case["face"], case["kind"])


# --- canonicalization --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("ヽ(´ー｀)ノ", "(´ー`)"),
        ("(╯°□°)╯︵ ┻━┻", "(╯°□°)"),
        ("（＾▽＾）", "(^▽^)"),
    ],
)
def test_canonicalize_issue_examples(raw, canonical):
    assert canonicalize(raw) == canonical


def test_canonicalize_uses_nfc_not_nfkc():
    # NFC composes e + combining acute; NFKC would also fold the compatibility character U+FF9F (half-width
    # semi-voiced mark) and U+2160 (Roman numeral one), which must survive.
    assert canonicalize("(e\u0301_e\u0301)") == "(\u00e9_\u00e9)"
    assert canonicalize("(;ﾟДﾟ)") == "(;ﾟДﾟ)"
    assert canonicalize("(Ⅰ_Ⅰ)") == "(Ⅰ_Ⅰ)"


@pytest.mark.parametrize("invisible", ["\u200b", "\u200c", "\u200d", "\ufeff", "\u200e", "\u200f", "\u2060"])
def test_canonicalize_deletes_invisible_format_characters(invisible):
    assert canonicalize(f"(^{invisible}_^{invisible})") == "(^_^)"


def test_zero_width_space_inside_kaomoji_is_deleted():
    assert canonicalize("(・\u200bω\u200b・)") == "(・ω・)"
    face = extract_face("(・\u200bω・) hi")
    assert face is not None
    assert face.text == "(・ω・)"
    assert face.raw == "(・\u200bω・)"


def test_fold_width():
    full = "".join(chr(c) for c in range(0xFF01, 0xFF5F))
    assert fold_width(full) == "".join(chr(c) for c in range(0x21, 0x7F))
    assert fold_width("\uff65") == "\u30fb"
    # Half-width katakana other than U+FF65 are not folded.
    assert fold_width("ﾟﾉ") == "ﾟﾉ"


def test_canonicalize_deletes_all_whitespace():
    assert canonicalize("( ˘ ω ˘ )") == "(˘ω˘)"
    assert canonicalize("(\u3000´ー｀\u3000)") == "(´ー`)"
    assert canonicalize(" ^_^ \t\n") == "^_^"


def test_canonicalize_keeps_outermost_group_at_first_opener():
    assert canonicalize("((^_^))") == "((^_^))"
    assert canonicalize("(っ˘ω˘)(˘ω˘c)") == "(っ˘ω˘)"
    assert canonicalize("¯\\_(ツ)_/¯") == "(ツ)"
    assert canonicalize("[(^_^)]") == "[(^_^)]"


# --- property tests ----------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(BROAD_TEXT)
def test_canonicalize_is_idempotent(text):
    once = canonicalize(text)
    assert canonicalize(once) == once


@PROPERTY_SETTINGS
@given(BROAD_TEXT)
def test_never_raises_on_arbitrary_text(text):
    canonicalize(text)
    extract_face(text)
    face_settled(text)


@PROPERTY_SETTINGS
@given(BROAD_TEXT)
def test_canonical_face_has_no_whitespace_and_is_nfc(text):
    out = canonicalize(text)
    assert not any(ch.isspace() for ch in out)
    assert unicodedata.is_normalized("NFC", out)


@PROPERTY_SETTINGS
@given(BROAD_TEXT)
def test_extracted_face_is_canonical(text):
    face = extract_face(text)
    if face is not None:
        assert face.text
        assert canonicalize(face.text) == face.text
        assert face.kind in ("kaomoji", "emoji")
        assert text[face.end - len(face.raw) : face.end] == face.raw


@pytest.mark.parametrize("face", CATALOGUE)
def test_catalogue_face_with_tail_extracts_itself(face):
    got = extract_face(face + " tail")
    assert got is not None
    assert got.text == face
    assert got.kind == "kaomoji"


@PROPERTY_SETTINGS
@given(
    st.sampled_from(CATALOGUE),
    st.text(alphabet=" \t*_>#", max_size=4).map(lambda s: s.lstrip("\n")),
    st.text(alphabet=st.characters(codec="ascii"), max_size=30),
)
def test_catalogue_face_survives_prefix_and_tail(face, prefix, tail):
    got = extract_face(prefix + face + " " + tail)
    assert got is not None
    assert got.text == face


# --- prose, code, URLs, empty ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "\n\n",
        "**",
        "hello there",
        "I think so.",
        "Sure! Here you go.",
        "https://example.com/page",
        "def f(x): return x",
        "(see below) for details",
        "42 is the answer",
    ],
)
def test_prose_code_urls_and_empty_give_none(reply):
    assert extract_face(reply) is None


@pytest.mark.parametrize(("reply", "face"), [("^_^ hi", "^_^"), ("T_T sorry", "T_T"), ("ಥ_ಥ oh", "ಥ_ಥ")])
def test_bracketless_faces(reply, face):
    got = extract_face(reply)
    assert got is not None
    assert (got.text, got.kind) == (face, "kaomoji")


def test_non_string_gives_none():
    assert extract_face(None) is None  # type: ignore[arg-type]


# --- emoji -------------------------------------------------------------------------------------------------

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
THUMBS_SKIN = "\U0001f44d\U0001f3fd"
KEYCAP_ONE = "1\ufe0f\u20e3"
FLAG_JP = "\U0001f1ef\U0001f1f5"
COOK = "\U0001f9d1\U0001f3fd\u200d\U0001f373"


@pytest.mark.parametrize("emoji", [FAMILY, THUMBS_SKIN, KEYCAP_ONE, FLAG_JP, COOK])
def test_emoji_sequences_stay_whole(emoji):
    face = extract_face(emoji + " tail")
    assert face is not None
    assert (face.text, face.kind) == (emoji, "emoji")
    assert canonicalize(emoji) == emoji
    assert is_emoji_cluster(emoji)


def test_zwj_sequence_keeps_its_joiners():
    face = extract_face(FAMILY + " hi")
    assert face is not None
    assert face.text.count("\u200d") == 3


def test_emoji_run_takes_consecutive_clusters():
    face = extract_face(FLAG_JP + THUMBS_SKIN + FAMILY + " all three")
    assert face is not None
    assert face.text == FLAG_JP + THUMBS_SKIN + FAMILY


def test_invisible_characters_around_emoji_are_deleted():
    assert canonicalize("\u200b" + THUMBS_SKIN + "\u200b") == THUMBS_SKIN


# "#" and "*" are markdown markers, but not when they are the base of a keycap emoji (rule 4 keeps it whole).
@pytest.mark.parametrize("keycap", ["#\ufe0f\u20e3", "*\ufe0f\u20e3"])
def test_hash_and_star_keycaps_stay_whole(keycap):
    face = extract_face(keycap + " tail")
    assert face is not None
    assert (face.text, face.kind) == (keycap, "emoji")


# --- face_settled ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", ["(＾", "ヽ( ´", "(^_^", "((^_^)", "(", "ヽ(", "h", "I", "", "  ", "**"])
def test_not_settled(reply):
    assert not face_settled(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "(^_^) ",
        "(^_^) sure",
        "（＾▽＾） ",
        "^_^ ",
        THUMBS_SKIN + " ",
        "he",
        "hello",
        "I ",
        "a\n",
        "(^_^\n",
        "(\n",
    ],
)
def test_settled(reply):
    assert face_settled(reply)


def test_settled_once_two_letter_run_appears():
    assert not face_settled("h")
    assert face_settled("he")
    assert face_settled("hello")


def test_complete_face_needs_following_text():
    # Trailing characters can still extend a bracketed face, and more emoji can extend an emoji run.
    assert not face_settled("(^_^)")
    assert face_settled("(^_^) ")
    assert not face_settled(THUMBS_SKIN)
    assert face_settled(THUMBS_SKIN + " ")


@PROPERTY_SETTINGS
@given(BROAD_TEXT, BROAD_TEXT)
def test_settled_replies_keep_their_face(text, more):
    # Once settled, no continuation may change the face. (A newline settles the reply by fiat, since
    # elicitation stops at the end of the first line, so such replies are left out here.)
    if face_settled(text) and "\n" not in text:
        before = extract_face(text)
        after = extract_face(text + more)
        assert (before and before.text) == (after and after.text)


@pytest.mark.parametrize(
    "reply", ["わかった、それは大変だね", "你好! 今天", "i’m fine", "привет друг", "ಠ益ಠ", "火鳖愈笑!\ufffd"]
)
def test_words_of_any_script_are_not_bracketless_faces(reply):
    # Rule 3 counts only symbols and marks as face characters, so a word in another script is prose.
    assert extract_face(reply) is None


# ------------------------------------------------------------------------------------ well-formedness


# Real kaomoji styles, written for this test: bracketed faces with arms, cheeks and glyph letters, and
# bracketless ones.
REAL_KAOMOJI = [
    "(^_^)", "(^▽^)", "(╥﹏╥)", "(ಥ﹏ಥ)", "(¬_¬)", "(•_•)", "(⊙_⊙)", "(≧▽≦)", "(◕‿◕)", "(╯°□°)",
    "(ᵔᴥᵔ)", "ʕ•ᴥ•ʔ", "(っ˘ω˘ς)", "(´・ω・`)", "(˘▽˘)", "(T_T)", "(o_O)", "(>_<)", "(;´Д`)", "(*^▽^*)",
    "(✿◠‿◠)", "(ง'̀-'́)", "(ノ°∀°)", "(ﾟдﾟ)", "(⌐■_■)", "(҂◡_◡)", "(｡•́︿•̀｡)", "(=^・ω・^=)", "(ó﹏ò)",
    "(ツ)", "(눈_눈)", "(T-T)", "(._.)", "(;_;)", "[¬º-°]", "{•̃_•̃}", "^_^", "T_T", "-_-", ":)", ";-(",
    "ಠ_ಠ", "\\o/", "^^;", "u_u", "0_0", "x_x", "(^人^)", "(`皿´)", "(ಠ益ಠ)",
]  # fmt: skip
# Bracketed noise of the kinds small models open replies with: numbers, list markers, words, kana and kanji
# runs, fractions, years, unclosed brackets.
NOISE = [
    "(65)", "(1_1100000000", "(2-+1-0)", "(4N\\)", "(Sこ子)", "(+「+が行ここできてきま", "(中--だ.)", "(1.)",
    "(½)", "(P)", "(i", "(498)", "(a)", "(iii)", "(2024)", "(1/2)", "(笑)", "(はい)", "[1]", "{x}", "(5%)",
    "($)", "(ok)", "(TM)", "(7.)", "()", "(+)", "(^_^", "(ab_c)", "(15J)",
]  # fmt: skip


@pytest.mark.parametrize("face", REAL_KAOMOJI)
def test_real_kaomoji_are_well_formed(face):
    assert is_well_formed(face), face


@pytest.mark.parametrize("face", load_catalogue())
def test_every_catalogue_face_is_well_formed(face):
    assert is_well_formed(face)


@pytest.mark.parametrize("noise", NOISE)
def test_bracketed_noise_is_not_well_formed(noise):
    face = extract_face(noise + " and then")
    assert face is not None and not face.well_formed, noise


def test_emoji_keep_their_own_rules():
    face = extract_face("👍🏽 sure")
    assert face.kind == "emoji" and face.well_formed


def test_markdown_escaped_emphasis_is_unescaped_before_extraction():
    assert extract_face("(\\*´∀｀\\*) yes").text == "(*´∀`*)"
    assert extract_face("(\\_\\_;) hm").text == "(__;)"
    assert extract_face("(/ω\\) no").text == "(/ω\\)"  # a backslash that is part of the face stays


@given(st.sampled_from("0123456789½"), st.text(alphabet="0123456789+-−*/=.,:%½", max_size=8))
def test_bracketed_numbers_are_never_well_formed(digit, rest):
    assert not is_well_formed(f"({digit}{rest})") and not is_well_formed(f"({rest}{digit})")


@given(st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Lo")), min_size=2, max_size=6))
def test_bracketed_words_are_never_well_formed(word):
    assume(not set(word) & GLYPH_LETTERS)
    assert not is_well_formed(f"({word})")


@given(
    st.sampled_from([f for f in load_catalogue() if f[0] == "("]), st.sampled_from(["ヽ", "ノ", "o", "ᕕ", ""])
)
def test_catalogue_faces_with_arms_stay_well_formed_and_unclosed_ones_do_not(face, arm):
    extracted = extract_face(f"{arm}{face}{arm} ok")
    assert extracted is not None and extracted.well_formed
    assert not is_well_formed(face[:-1])  # the same face, unclosed

r"""Face extraction and canonicalization: which kaomoji or emoji a reply opens with, in one canonical form.

The rules are fixed so that two runs, two models and two papers count the same face as the same string.
Extraction (``extract_face``): skip leading whitespace and markdown markers; then try, in order, a bracketed
kaomoji (up to three "arm" characters, then a balanced bracket group, then trailing characters up to
whitespace), a leading run of emoji grapheme clusters, and a bracketless token of 2-16 characters.
Canonicalization (``canonicalize``): NFC, delete invisible format characters outside emoji sequences, fold
full-width ASCII, delete whitespace, keep only the outermost bracket group that starts at the first opening
bracket. Extraction first undoes markdown escapes of emphasis characters (``\*``, ``\_``, ``\~``, ``\```)
in the face it found; ``canonicalize`` leaves backslashes alone, so that it stays idempotent.

Extraction says what a reply opens with; ``well_formed`` says whether that is a kaomoji at all, or bracketed
noise such as ``(65)``, ``(1.)`` or ``(Sこ子)`` (see :func:`is_well_formed`).
"""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass
from typing import Literal

import regex

FaceKind = Literal["kaomoji", "emoji"]

MARKDOWN_MARKERS = frozenset("*_>#")
OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
SENTENCE_PUNCTUATION = frozenset(".,!?;:'\"")
CJK_SENTENCE_PUNCTUATION = frozenset("。、，！？；：")
MAX_ARMS = 3
TOKEN_LENGTH = (2, 16)
# Rule 5 (prose is no face) for bracketed text: a parenthetical such as "(see below)" is prose, so a bracket
# group that holds an ASCII word of this many letters, or is longer than this, is not a kaomoji.
PROSE_WORD_LETTERS = 4
MAX_BRACKET_GROUP = 40

_ASCII_LETTER_RUN = regex.compile(r"[A-Za-z]{2,}")
_PROSE_WORD = regex.compile(rf"[A-Za-z]{{{PROSE_WORD_LETTERS},}}")
_GRAPHEME = regex.compile(r"\X")
_EMOJI_START = regex.compile(r"\p{Emoji_Presentation}|\p{Regional_Indicator}")
_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
# Chat renderers escape markdown emphasis inside kaomoji: "(\*´∀｀\*)" is "(*´∀｀*)" on screen. Brackets and
# slashes are not unescaped: "(/ω\)" is a face with a backslash in it.
_MARKDOWN_ESCAPE = regex.compile(r"\\([*_~`])")

# Letters and digits that kaomoji use as eyes, mouths, cheeks and arms. Any other letter of a CJK, kana or
# Hangul script makes a bracket group a word ("(笑)", "(Sこ子)"); other scripts' letters may stand alone.
GLYPH_LETTERS = frozenset(
    "ωεзДдʖʘᴥᵔᵕᴗʕʔಠಥಸᗒᗕᗣᗨᗩΦμπιςꈍツッノﾉロヘメヮーﾟっつへゝ人皿益口ㄒㅂㅍㆁㆆㆍㅅㅠㅜㅡ눈º๑ง"
)
_WORD_SCRIPTS = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Bopomofo}]")
_NUMBER_PUNCTUATION = frozenset("+-−*/=.,:%")
# Western emoticons are the one bracketless form whose bracket is a mouth: ":)", ";-(", "=]".
_EMOTICON = regex.compile(r"^[:;=8][-'^o]?[()\[\]]$")


@dataclass(frozen=True)
class Face:
    """A face that opens a reply: its canonical text, its kind, the raw span it came from, and whether it
    is a well-formed kaomoji (or an emoji) rather than bracketed noise."""

    text: str
    kind: FaceKind
    raw: str
    end: int  # index in the reply just past the raw face
    well_formed: bool = True


def fold_width(text: str) -> str:
    """Fold the full-width ASCII block U+FF01-U+FF5E to ASCII, and U+FF65 to U+30FB."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xFF01 <= code <= 0xFF5E:
            out.append(chr(code - 0xFEE0))
        elif code == 0xFF65:
            out.append("\u30fb")
        else:
            out.append(ch)
    return "".join(out)


def is_emoji_cluster(cluster: str) -> bool:
    """True for one grapheme cluster that is an emoji (presentation form, VS16, keycap, flag or ZWJ sequence)."""
    if not cluster:
        return False
    if _EMOJI_START.match(cluster):
        return True
    if len(cluster) > 1 and ("\ufe0f" in cluster or "\u20e3" in cluster):
        return True
    return "\u200d" in cluster and bool(_PICTOGRAPHIC.match(cluster))


def _delete_invisible(text: str) -> str:
    """Delete format characters (Cf) except inside emoji grapheme clusters, where joiners and tags belong."""
    out = []
    for cluster in _GRAPHEME.findall(text):
        if is_emoji_cluster(cluster):
            out.append(cluster)
        else:
            out.append("".join(ch for ch in cluster if unicodedata.category(ch) != "Cf"))
    return "".join(out)


def _match_bracket(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at ``start``, balancing (), [] and {}; None if it never closes.

    A closer that does not match the innermost open bracket is treated as an ordinary character.
    """
    stack: list[str] = []
    for i in range(start, len(text)):
        ch = text[i]
        if ch in OPENERS:
            stack.append(OPENERS[ch])
        elif ch in CLOSERS and stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return i
    return None


def canonicalize(face: str) -> str:
    """The canonical form of a face. Idempotent, never raises, never returns whitespace."""
    text = unicodedata.normalize("NFC", face)
    text = _delete_invisible(text)
    text = fold_width(text)
    text = "".join(ch for ch in text if not ch.isspace())
    for i, ch in enumerate(text):
        if ch in OPENERS:
            close = _match_bracket(text, i)
            if close is not None:
                text = text[i : close + 1]
            break
    # Deleting characters can bring a combining mark next to a new base; normalising again keeps this idempotent.
    return unicodedata.normalize("NFC", text)


def _skip_prefix(reply: str) -> int:
    i = 0
    while i < len(reply) and (reply[i].isspace() or reply[i] in MARKDOWN_MARKERS):
        if reply[i] in "#*" and reply[i + 1 : i + 2] in ("\ufe0f", "\u20e3"):
            break  # the keycap emoji #️⃣ and *️⃣, not markdown
        i += 1
    return i


def _is_arm(ch: str) -> bool:
    return not (
        ch.isspace() or (ch.isascii() and ch.isalnum()) or ch in SENTENCE_PUNCTUATION or ch in OPENERS
    )


def _token_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and not text[end].isspace():
        end += 1
    return end


def _opener_after_arms(folded: str, start: int) -> int | None:
    """Index of the opening bracket that follows at most three arms from ``start``, or None."""
    i = start
    while i < len(folded) and i - start < MAX_ARMS and folded[i] not in OPENERS and _is_arm(folded[i]):
        i += 1
    return i if i < len(folded) and folded[i] in OPENERS else None


def _open_bracket(folded: str, start: int) -> bool:
    """True while a bracketed face has opened but not closed, and could still close within the length cap."""
    i = _opener_after_arms(folded, start)
    return i is not None and _match_bracket(folded, i) is None and len(folded) - i <= MAX_BRACKET_GROUP


def _bracketed(folded: str, start: int) -> int | None:
    """End of a bracketed kaomoji starting at ``start`` (arms, group, trailing characters), or None."""
    i = _opener_after_arms(folded, start)
    if i is None:
        return None
    close = _match_bracket(folded, i)
    if close is None:
        return None
    group = folded[i : close + 1]
    if len(group) > MAX_BRACKET_GROUP or _PROSE_WORD.search(group):
        return None
    return _token_end(folded, close + 1)


def _emoji_run(reply: str, start: int) -> int | None:
    end = start
    for cluster in _GRAPHEME.findall(reply, pos=start):
        if not is_emoji_cluster(cluster):
            break
        end += len(cluster)
    return end if end > start else None


def _bracketless(reply: str, start: int) -> int | None:
    end = _token_end(reply, start)
    token = reply[start:end]
    lo, hi = TOKEN_LENGTH
    if not lo <= len(token) <= hi or _ASCII_LETTER_RUN.search(token):
        return None
    if not any(_is_face_character(ch) for ch in token):
        return None
    return end


def _is_face_character(ch: str) -> bool:
    """A character that can make a bracketless token a face: a symbol or mark, not a word or a full stop.

    The rule names ASCII letters, digits and sentence punctuation; letters and digits of every script, quotation
    marks and CJK sentence punctuation are excluded as well, so that a Japanese or Chinese word opening a reply
    ("わかった") is prose, not a kaomoji, while ಥ_ಥ, ʕ•ᴥ•ʔ and :) stay faces. U+FFFD (a token cut mid-character)
    is no face character either.
    """
    category = unicodedata.category(ch)
    return ch != "\ufffd" and not (
        category[0] in "LN"
        or category in ("Pi", "Pf")
        or ch in SENTENCE_PUNCTUATION
        or ch in CJK_SENTENCE_PUNCTUATION
        or ch.isspace()
    )


def extract_face(reply: str) -> Face | None:
    """The canonical face that ``reply`` opens with, or None for prose, code, URLs and empty text."""
    if not isinstance(reply, str):
        return None
    start = _skip_prefix(reply)
    if start >= len(reply):
        return None
    # Full-width folding maps one character to one, so indices in ``folded`` are indices in ``reply``.
    folded = fold_width(reply)
    end = _bracketed(folded, start)
    kind: FaceKind = "kaomoji"
    if end is None:
        end = _emoji_run(reply, start)
        kind = "emoji"
    if end is None:
        end = _bracketless(reply, start)
        kind = "kaomoji"
    if end is None:
        return None
    raw = reply[start:end]
    text = canonicalize(_MARKDOWN_ESCAPE.sub(r"\1", raw))
    if not text:
        return None
    return Face(text=text, kind=kind, raw=raw, end=end, well_formed=is_well_formed(text, kind))


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN" and ch not in GLYPH_LETTERS


def is_well_formed(face: str, kind: FaceKind = "kaomoji") -> bool:
    r"""Whether a canonical face is a kaomoji (or an emoji) rather than bracketed noise.

    Emoji are well-formed by extraction. A kaomoji is well-formed when all hold:

    1. its brackets balance: it is one bracket group, or it has no brackets, or it is a western emoticon
       whose bracket is the mouth (``:)``, ``;-(``);
    2. it has a face glyph: a symbol, mark or punctuation that is not sentence punctuation (``.,!?;:'"``),
       or one of ``GLYPH_LETTERS`` (``ツ ω Д ᴥ ಥ ಠ`` ...); a bracket group holds at least two characters,
       or one glyph letter (``(ツ)``);
    3. it holds no word: no letter of a CJK, kana or Hangul script outside ``GLYPH_LETTERS``, no two other
       letters or digits side by side (``(4N\)``), and at most four of them in all (single ASCII letters
       stand as eyes: ``T_T``, ``u_u``, ``0_0``);
    4. it is no number: not digits with only ``+-−*/=.,:%`` between them (``(2-+1-0)``, ``(½)``, ``(5%)``).
    """
    if kind == "emoji":
        return True
    if _EMOTICON.match(face):
        return True
    has_bracket = any(ch in OPENERS or ch in CLOSERS for ch in face)
    if has_bracket and not (face[0] in OPENERS and _match_bracket(face, 0) == len(face) - 1):
        return False
    inner = face[1:-1] if has_bracket else face
    if not inner or (has_bracket and len(inner) < 2 and inner not in GLYPH_LETTERS):
        return False
    if _WORD_SCRIPTS.search("".join(ch for ch in inner if ch not in GLYPH_LETTERS)):
        return False
    letters = [i for i, ch in enumerate(inner) if _is_letter(ch)]
    if len(letters) > 4 or any(b == a + 1 for a, b in itertools.pairwise(letters)):
        return False
    digits = [ch for ch in inner if unicodedata.category(ch)[0] == "N" and ch not in GLYPH_LETTERS]
    if digits and all(ch in _NUMBER_PUNCTUATION or ch in digits for ch in inner):
        return False  # "(1.)", "(2-+1-0)", "(½)"
    return any(
        ch in GLYPH_LETTERS or (_is_face_character(ch) and ch not in OPENERS and ch not in CLOSERS)
        for ch in inner
    )


def face_settled(reply: str) -> bool:
    """True once more text can no longer change the reply's face, or the first line has ended.

    The face is settled when it is complete (text follows it), or when none is possible any more: a reply
    that opens with an ASCII letter or digit can only hold a bracketless face, which a run of two letters,
    a token over 16 characters, or a finished token that is not a face rules out. Elicitation stops sampling
    a reply as soon as this holds.
    """
    start = _skip_prefix(reply)
    if start >= len(reply):
        return False
    if "\n" in reply[start:]:
        return True
    if _open_bracket(fold_width(reply), start):
        return False
    face = extract_face(reply)
    if face is not None:
        return face.end < len(reply)
    first = reply[start]
    if not (first.isascii() and first.isalnum()):
        return False
    end = _token_end(reply, start)
    token = reply[start:end]
    return end < len(reply) or len(token) > TOKEN_LENGTH[1] or bool(_ASCII_LETTER_RUN.search(token))

"""Redaction: planted secrets and personal details of every kind, embedded in prose, come out as their typed
placeholder and nothing of them survives; prose, code, kaomoji, versions, dates, UUIDs and SHAs stay as they
are; redacting twice changes nothing.

No literal key is in this file: every secret-shaped string is drawn at import from a seeded generator, in a
shape (alternating character classes) that any real key of its provider could have.
"""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import PurePosixPath, PureWindowsPath

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from affectlens.errors import AffectlensError
from affectlens.transcripts.redact import (
    PLACEHOLDER,
    Redactor,
    findings,
    redact,
    redact_path,
    redaction_rules,
)

R = random.Random(20260101)
CLASSES = (string.ascii_uppercase, string.digits, string.ascii_lowercase, string.ascii_uppercase,
           string.ascii_lowercase, string.digits, string.ascii_lowercase)  # fmt: skip


def tok(n: int, extra: str = "") -> str:
    """n random characters cycling upper, digit, lower...: mixed case and digits, no dictionary runs."""
    classes = (*CLASSES, extra) if extra else CLASSES
    return "".join(R.choice(classes[i % len(classes)]) for i in range(n))


def pick(n: int, alphabet: str) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


def digits(n: int) -> str:
    return str(R.randint(1, 9)) + pick(n - 1, string.digits)


def b64url(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def jwt() -> str:
    head = b64url({"alg": "HS256", "typ": "JWT"})
    return f"{head}.{b64url({'sub': digits(10), 'iat': R.randint(10**9, 2 * 10**9)})}.{tok(43, '-_')}"


def pem(label: str, end: bool = True) -> str:
    body = "\n".join(tok(64, "+/") for _ in range(4)) + "\n" + tok(20, "+/") + "=="
    return f"-----BEGIN {label}-----\n{body}" + (f"\n-----END {label}-----" if end else "")


B32 = string.ascii_uppercase + "234567"
HEX = "0123456789abcdef"
S = "{S}"  # where the secret goes in a template

# (placeholder, secret, template): the text is the template with the secret; the redaction is the template
# with the placeholder.
PLANTED = [
    ("<SECRET:anthropic>", f"sk-ant-api03-{tok(93, '-_')}AA", "export ANTHROPIC_API_KEY={S}\nthen rerun."),
    ("<SECRET:anthropic>", f"sk-ant-admin01-{tok(80)}", "The admin key {S} was pasted here by mistake."),
    ("<SECRET:anthropic>", f"sk-ant-oat01-{tok(60, '_')}", 'client = Anthropic(api_key="{S}")'),
    ("<SECRET:openai>", f"sk-proj-{tok(156, '-_')}", "OPENAI_API_KEY={S} # from the dashboard"),
    ("<SECRET:openai>", f"sk-{tok(48)}", "I found the legacy key {S} in config.yaml."),
    ("<SECRET:openai>", f"sk-svcacct-{tok(100, '_')}", "Service account key: {S}."),
    ("<SECRET:openai>", f"sk-{tok(20)}T3BlbkFJ{tok(20)}", "old = '{S}'"),
    (
        "<SECRET:huggingface>",
        "hf_" + pick(34, string.ascii_letters[:26]).capitalize() + "Q",
        "token {S} for the hub",
    ),
    ("<SECRET:huggingface>", f"hf_{tok(34)}", "huggingface-cli login --token {S}"),
    ("<SECRET:huggingface>", f"hf_{tok(37)}", "HF_TOKEN={S} python train.py"),
    ("<SECRET:github>", f"ghp_{tok(36)}", "git clone https://{S}@github.com/org/repo.git"),
    ("<SECRET:github>", f"gho_{tok(36)}", "The OAuth token {S} expired."),
    ("<SECRET:github>", f"ghu_{tok(36)}", "user-to-server {S}"),
    ("<SECRET:github>", f"ghs_{tok(36)}", "GITHUB_TOKEN: {S}"),
    ("<SECRET:github>", f"ghr_{tok(36)}", "refresh with {S} now"),
    ("<SECRET:github>", f"github_pat_{tok(22)}_{tok(59)}", "Use the fine-grained {S} for CI."),
    ("<SECRET:slack>", f"xoxb-{digits(12)}-{digits(13)}-{tok(24)}", "The bot token is {S}, rotate it."),
    ("<SECRET:slack>", f"xoxp-{digits(12)}-{digits(12)}-{digits(13)}-{pick(32, HEX)}", "SLACK_TOKEN={S}"),
    ("<SECRET:slack>", f"xapp-1-A{tok(10)}-{digits(13)}-{pick(64, HEX)}", "app-level token {S} here"),
    (
        "<SECRET:slack>",
        f"T0{tok(8)}/B0{tok(8)}/{tok(24)}",
        "curl -X POST https://hooks.slack.com/services/{S} -d @msg.json",
    ),
    ("<SECRET:stripe>", f"sk_live_{tok(24)}", "stripe.api_key = '{S}'"),
    ("<SECRET:stripe>", f"rk_live_{tok(99)}", "a restricted key {S} for the worker"),
    ("<SECRET:stripe>", f"pk_live_{tok(24)}", "publishable: {S}"),
    ("<SECRET:stripe>", f"sk_test_{tok(24)}", "In tests we use {S} instead."),
    ("<SECRET:stripe>", f"whsec_{tok(32)}", "STRIPE_WEBHOOK_SECRET={S}"),
    (
        "<SECRET:google>",
        f"AIza{tok(35, '-_')}",
        "https://maps.googleapis.com/maps/api/js?key={S}&callback=init",
    ),
    ("<SECRET:google>", f"AIza{tok(35)}", "GOOGLE_API_KEY={S}"),
    ("<SECRET:google>", f"AIza{tok(35, '_')}", 'The Gemini key "{S}" works.'),
    ("<SECRET:aws>", "AKIA" + pick(16, B32), "aws_access_key_id = {S}"),
    ("<SECRET:aws>", "ASIA" + pick(16, B32), "The session key id {S} belongs to the role."),
    ("<SECRET:aws>", tok(40, "/+"), "aws_secret_access_key = {S}\nregion = eu-west-1"),
    ("<SECRET:aws>", tok(40, "/+"), "export AWS_SECRET_ACCESS_KEY={S}"),
    ("<SECRET:aws>", tok(40, "/+"), '{"AccessKeyId": "ASIA", "SecretAccessKey": "{S}"}'),
    ("<SECRET:jwt>", jwt(), "The session cookie was {S} (decoded it)."),
    ("<SECRET:jwt>", jwt(), "curl -H 'Authorization: Bearer {S}' https://api.internal"),
    ("<SECRET:jwt>", jwt(), 'id_token: "{S}"'),
    ("<SECRET:private-key>", pem("RSA PRIVATE KEY"), "Here is the key file:\n{S}\nThat should work."),
    ("<SECRET:private-key>", pem("OPENSSH PRIVATE KEY"), "cat ~/.ssh/id_ed25519\n{S}\n"),
    ("<SECRET:private-key>", pem("EC PRIVATE KEY"), "```\n{S}\n```"),
    ("<SECRET:private-key>", pem("PRIVATE KEY", end=False), "Truncated output:\n{S}"),
    ("<SECRET:bearer>", tok(40, ".-_"), "curl -H 'Authorization: Bearer {S}' https://api.internal/v1"),
    ("<SECRET:bearer>", tok(32), '{"headers": {"Authorization": "Bearer {S}"}}'),
    ("<SECRET:bearer>", tok(28), "Send it as Bearer {S} in the header."),
    ("<SECRET:bearer>", base64.b64encode(f"deploy:{tok(16)}".encode()).decode(), "Authorization: Basic {S}"),
    ("<SECRET:url-password>", tok(16), "DATABASE_URL=postgres://app:{S}@db.internal:5432/app"),
    (
        "<SECRET:url-password>",
        tok(12, "!*"),
        "git remote add origin https://deploy:{S}@git.example.dev/x.git",
    ),
    ("<SECRET:url-password>", tok(20), "redis://:{S}@cache:6379/0 is the cache."),
    ("<SECRET:url-password>", tok(18), "mongodb+srv://admin:{S}@cluster0.mongodb.net/db"),
    ("<SECRET:generic>", "hunter2-" + digits(4), 'password = "{S}"'),
    ("<SECRET:generic>", tok(14), "DB_PASSWORD={S}\nDB_HOST=db"),
    ("<SECRET:generic>", tok(30, "-_"), '{"client_secret": "{S}", "grant_type": "client_credentials"}'),
    ("<SECRET:generic>", pick(32, HEX), "api_key: {S}"),
    ("<SECRET:generic>", tok(50), "SECRET_KEY = '{S}'"),
    ("<SECRET:generic>", tok(40, "+/"), "The blob {S} came back from the server."),
    ("<SECRET:generic>", tok(64, "-_"), "Use this one-time code: {S} (valid for 5 minutes)."),
    ("<SECRET:sendgrid>", f"SG.{tok(22)}.{tok(43)}", "SENDGRID={S}"),
    ("<SECRET:twilio>", "SK" + pick(32, HEX), "twilio key {S}"),
    ("<SECRET:gitlab>", f"glpat-{tok(20)}", "GITLAB_TOKEN {S}"),
    ("<SECRET:telegram>", f"{digits(9)}:{tok(35)}", "bot {S} online"),
    ("<SECRET:mailchimp>", pick(32, HEX) + "-us12", "mailchimp {S}"),
    ("<EMAIL>", "alice.smith@example.com", "Please mail {S} about the build."),
    ("<EMAIL>", "bob+ci@mail.example.co.uk", "Co-Authored-By: Bob <{S}>"),
    ("<EMAIL>", "carol_92@sub.example.org", "Contact: {S}."),
    ("<EMAIL>", "dave@example.io", "mailto:{S}"),
    ("<IP>", "192.168.1.23", "ssh into {S} and restart nginx."),
    ("<IP>", "10.0.0.5", "The server listens on {S}:8080 now."),
    ("<IP>", "203.0.113.77", "Blocked requests from {S}."),
    ("<IP>", "255.255.255.0", "netmask {S}"),
    ("<IP>", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "IPv6 {S} is the gateway."),
    ("<IP>", "2001:db8::8a2e:370:7334", "curl http://[{S}]:8000/"),
    ("<IP>", "fe80::1ff:fe23:4567:890a", "link-local {S}, interface eth0"),
    ("<PHONE>", "+1 (415) 555-2671", "Call me at {S} tomorrow."),
    ("<PHONE>", "+44 20 7946 0958", "The London office is {S}."),
    ("<PHONE>", "+49 30 12345678", "Tel.: {S}"),
    ("<PHONE>", "+33 6 12 34 56 78", "portable {S}"),
    ("<PHONE>", "+14155552671", "E.164: {S}"),
    ("<PHONE>", "415-555-2671", "or {S} after five"),
    ("<PHONE>", "(415) 555-2671", "desk: {S}"),
    ("<PHONE>", "06 12 34 56 78", "mon numéro: {S}"),
    ("<PHONE>", "020 7946 0958", "ring {S} please"),
]
HOMES = [  # (text, redacted): the three OS forms and the others
    ("/home/alice/proj/x.py", "<HOME>/proj/x.py"),
    ("Edited /home/alice/proj/x.py and /home/alice.", "Edited <HOME>/proj/x.py and <HOME>."),
    ("<cwd>/home/alice/w</cwd>", "<cwd><HOME>/w</cwd>"),
    ("file:///home/alice/notes.md", "file://<HOME>/notes.md"),
    ("/Users/alice/src/app/main.swift", "<HOME>/src/app/main.swift"),
    ("cd /Users/Alice.Smith/Desktop", "cd <HOME>/Desktop"),
    ("/mnt/c/Users/alice/code", "<HOME>/code"),
    ("C:\\Users\\alice\\code\\x.py", "<HOME>\\code\\x.py"),
    ('"cwd": "C:\\\\Users\\\\alice\\\\code"', '"cwd": "<HOME>\\\\code"'),
    ("C:/Users/alice/code", "<HOME>/code"),
    ("D:\\Users\\Alice Smith\\Documents\\a.txt", "<HOME>\\Documents\\a.txt"),
    ("see ~alice/notes.txt", "see <HOME>/notes.txt"),
    ("cd ~alice && ls", "cd <HOME> && ls"),
    ("/root/.bashrc", "<HOME>/.bashrc"),
    ("ls /root", "ls <HOME>"),
    ("~/.claude/projects/-home-alice-proj/s.jsonl", "~/.claude/projects/<HOME>-proj/s.jsonl"),
    ("projects/-Users-alice-src/s.jsonl", "projects/<HOME>-src/s.jsonl"),
]
KEPT = [  # nothing in here is redacted
    "The quick brown fox jumps over the lazy dog. We refactored the parser, then ran the tests again, and "
    "everything passed; the remaining failures were flaky network calls, not our code.",
    "def tokenize(text: str, max_tokens: int = 1024) -> list[str]:\n    token = tokenizer(text)\n"
    "    password: str = getpass()\n    return token[:max_tokens]",
    "# Heading\n\n- [x] item one\n- [ ] item two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n---\n**bold** _it_ `code`",
    "(^▽^) (╥﹏╥) (ಠ_ಠ) ¯\\_(ツ)_/¯ (~_~) ~(˘▾˘~) (╯°□°)╯︵ ┻━┻ ヽ(°〇°)ﾉ (*^▽^*) (=^･ω･^=) >_< ^_^ :-)",
    "🎉 Done! ✨ 🚀 👍🏽 ❤️",
    "versions 2.13.0, v1.2.3, 1.2.3-beta.1, Python 3.11.7, version 1.2.3.4, RFC 5890 §2.3.2.1",
    "dates 2026-12-01, 01.02.2026, 12/01/2026, 2026-12-01T12:30:45.123Z, at 12:30 or 12:30:45",
    "colours #ff8800 #FFF rgb(255, 136, 0); numbers 42, 3.14159, 1,000,000, +100, -7, 1e-10, 12345678901234",
    "uuid 123e4567-e89b-12d3-a456-426614174000 and 0199e0f2-6c3a-7d41-9b2e-5f8a1c3d7e90",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b (short 3f78685), sha256 "
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "git@github.com:org/repo.git and icon@2x.png and @decorator and user@localhost",
    "::1 and a[1::2] and std::vector and f32::EPSILON and aa:bb:cc:dd:ee:ff and 127.0.0.1:8000 and 0.0.0.0",
    "paths src/affectlens/transcripts/redact.py /usr/lib/python3.11/site-packages /etc/hosts ~/proj ./x",
    "ThisIsAVeryLongCamelCaseClassNameForTesting123 test_redact_is_idempotent_on_arbitrary_text_2",
    "rollout-2025-10-14T10-00-01-0199e0f2-6c3a-7d41-9b2e-5f8a1c3d7e90.jsonl",
    "~~strike~~ costs ~5 minutes, about ~unknown; @@ -12,7 +12,8 @@",
    "Bearer tokens are sent in a header. The password: see the vault. token = None",
    "phones? 1234567890, 100 200 3000, 2026-12-01, 1-2-3, +1 point",
]


def _cases():
    for placeholder, secret, template in PLANTED:
        yield pytest.param(template.replace(S, secret), template.replace(S, placeholder), secret,
                           id=f"{placeholder}:{template[:24]}")  # fmt: skip


@pytest.mark.parametrize(("text", "want", "secret"), list(_cases()))
def test_planted_is_replaced_by_its_placeholder(text, want, secret):
    out = redact(text)
    assert out == want
    assert secret not in out
    assert redact(out) == out


def test_at_least_three_planted_per_kind():
    counts: dict[str, int] = {}
    for placeholder, _, _ in PLANTED:
        counts[placeholder] = counts.get(placeholder, 0) + 1
    brief = ["anthropic", "openai", "huggingface", "github", "slack", "stripe", "google", "aws", "jwt",
             "private-key", "bearer", "url-password", "generic"]  # fmt: skip
    wanted = [f"<SECRET:{k}>" for k in brief] + ["<EMAIL>", "<IP>", "<PHONE>"]
    assert all(counts.get(p, 0) >= 3 for p in wanted), counts


@pytest.mark.parametrize(("text", "want"), HOMES)
def test_home_user_in_every_form(text, want):
    assert redact(text) == want
    assert redact(want) == want


def test_redact_path_takes_path_objects():
    assert redact_path(PurePosixPath("/home/alice/proj/x.py")) == "<HOME>/proj/x.py"
    assert redact_path(PureWindowsPath("C:/Users/alice/proj")) == "<HOME>\\proj"
    assert redact_path("/srv/data/run.jsonl") == "/srv/data/run.jsonl"


@pytest.mark.parametrize("text", KEPT)
def test_prose_code_and_faces_are_kept(text):
    assert redact(text) == text
    assert findings(text) == []


def test_findings_name_the_kind_and_the_span():
    key = f"ghp_{tok(36)}"
    text = f"mail alice@example.com the key {key} from 10.1.2.3"
    found = findings(text)
    assert [(f.kind, text[f.span[0] : f.span[1]]) for f in found] == [
        ("email", "alice@example.com"), ("github", key), ("ip", "10.1.2.3")]  # fmt: skip
    assert [f.placeholder for f in found] == ["<EMAIL>", "<SECRET:github>", "<IP>"]


def test_overlaps_go_to_the_more_specific_rule():
    key = f"sk-ant-api03-{tok(90)}"
    assert redact(f"ANTHROPIC_API_KEY={key}") == "ANTHROPIC_API_KEY=<SECRET:anthropic>"  # not generic
    assert redact(f"Authorization: Bearer {key}") == "Authorization: Bearer <SECRET:anthropic>"
    assert redact(f"SECRET_KEY = '{tok(40, '+/')}'") == "SECRET_KEY = '<SECRET:generic>'"  # Django, not AWS
    assert (
        redact(f"postgres://u:{tok(12)}@10.0.0.9:5432/x") == "postgres://u:<SECRET:url-password>@<IP>:5432/x"
    )
    assert redact(f"https://x-access-token:ghp_{tok(36)}@github.com/o/r") == (
        "https://x-access-token:<SECRET:github>@github.com/o/r")  # fmt: skip


def test_placeholders_are_never_redacted_again():
    text = (
        " ".join(p for _, p, _ in redaction_rules()) + ' password = "<SECRET:generic>" Bearer <SECRET:bearer>'
    )
    assert redact(text) == text


def test_home_users_are_redacted_everywhere():
    redactor = Redactor(home_users=["alice.smith"])
    text = (
        "alice.smith@laptop:~/proj$ cat /x/-home-alice-smith-proj/a.jsonl by Alice.Smith, not malice.smithy"
    )
    assert (
        redactor.redact(text)
        == "<USER>@laptop:~/proj$ cat /x/<HOME>-proj/a.jsonl by <USER>, not malice.smithy"
    )
    assert Redactor().redact(text) == text.replace("-home-alice", "<HOME>")
    for bad in ["", "a", "al ice", "123", "x/y"]:
        with pytest.raises(AffectlensError, match="home user"):
            Redactor(home_users=[bad])


def test_unicode_look_alikes_do_not_match_ascii_names():
    text = "to\u212aen = 'abcdef12' and pas\u017fword: 'xyzxyz99'"  # KELVIN SIGN, LONG S
    assert redact(text) == text


def test_redaction_rules_cover_every_kind():
    rules = redaction_rules()
    assert len({kind for kind, _, _ in rules}) == len(rules)
    assert all(PLACEHOLDER.fullmatch(placeholder) and description for _, placeholder, description in rules)
    placeholders = {placeholder for _, placeholder, _ in rules}
    assert {p for p, _, _ in PLANTED} <= placeholders and {"<HOME>", "<USER>"} <= placeholders


# -- properties ---------------------------------------------------------------------------------------------

FRAGMENTS = [secret for _, secret, _ in PLANTED] + [t for t, _ in HOMES] + KEPT + [
    " ", "\n", "@", ":", "/", "-", "_", "=", '"', "'", "~", "+", ".", "<", ">", "<HOME>", "<SECRET:", "Bearer ",
    "password=", "https://u:", "@example.com", "/home/", "C:\\Users\\", "+1 ", "10.0.0.", "::", "eyJ", "-----",
]  # fmt: skip
MIXED = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=12).map("".join)
# Every rule needs an ASCII digit, an upper-case ASCII letter or one of these characters.
SAFE = st.text(st.characters(blacklist_categories=("Cs",),
                             blacklist_characters=string.digits + string.ascii_uppercase + "@:/\\~=<>_+-$%"))  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), MIXED))
@example("/Users/alice/home/bob/x")
@example("a@b.co/home/x 1.2.3.4:5 +1 555 123 4567 2")
def test_redact_is_idempotent(text):
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=300, deadline=None)
@given(SAFE)
def test_text_without_triggers_is_unchanged(text):
    assert redact(text) == text

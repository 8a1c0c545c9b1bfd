"""Redaction of transcript text before anything is stored: secrets, contact details, addresses, home users.

Every finding is replaced by a typed placeholder (``<SECRET:github>``, ``<EMAIL>``, ``<IP>``, ``<PHONE>``,
``<HOME>``, ``<USER>``); ``redaction_rules()`` lists them for the dataset card. Overlapping findings go to the
more specific rule (a provider key beats a bearer token beats a generic high-entropy string), then to the
longer one. Placeholders already in the text are never matched again, and ``redact`` repeats its pass until
the text stops changing, so ``redact(redact(x)) == redact(x)``. All patterns are ASCII-only, so kaomoji and
emoji are never part of a finding.

detect-secrets (Yelp) is used, but only for what fits a string scanner: the compiled ``denylist`` patterns of
its regex plugins (for providers not typed here, such as SendGrid, Twilio, GitLab, Discord, Telegram, PyPI,
Mailchimp, Square and Azure, and as a second net for the typed ones) and its sequential-string heuristic.
Its line scanner is not used: ``scan_line`` runs in an "eager" mode that reports every word of prose as a
high-entropy candidate, plugins report secret values rather than spans (GitHub's reports just ``ghp``), its
OpenAI and Stripe patterns miss current key shapes, and its settings are process-global. The typed provider
patterns, the generic entropy rule and everything that is not a secret are this module's own regexes.

Judgment calls: pure hex strings (git SHAs, sha256 digests, UUIDs) are kept, since transcripts cite them
constantly and they name content rather than grant access; a hex credential is still caught when it is
assigned to a secret-looking name (``token = "..."``). The generic rule also wants mixed case and digits and
little dictionary-like text, so identifiers, paths and file names stay; an all-lowercase or all-uppercase
random token is caught only by a provider pattern or an assignment. ``::1``, 127.x.x.x and 0.0.0.0 (loopback
and unspecified: they identify no one, and ``::1`` is also a Python slice) are kept; ``git@host`` and
``icon@2x.png`` are not emails; a bare ``~word`` in prose means "about", so ``~user`` without a slash is a
home only when quoted or after cd/ls/echo/....
"""

from __future__ import annotations

import bisect
import functools
import importlib
import ipaddress
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import regex

from affectlens.errors import AffectlensError

_F = regex.ASCII | regex.V0
PLACEHOLDER = regex.compile(r"<(?:SECRET:[a-z0-9-]+|EMAIL|IP|PHONE|HOME|USER)>", _F)


class Rule(NamedTuple):
    kind: str
    placeholder: str
    description: str


@dataclass(frozen=True)
class Finding:
    kind: str
    span: tuple[int, int]  # the replaced characters, in the text given to findings()

    @property
    def placeholder(self) -> str:
        return _PLACEHOLDERS[self.kind]


def _secret(kind: str, how: str) -> Rule:
    return Rule(kind, f"<SECRET:{kind}>", how)


# fmt: off
_RULES = [
    _secret("private-key", "PEM block from -----BEGIN ... PRIVATE KEY----- through its END line (or its body)"),
    _secret("anthropic", "sk-ant-... key"),
    _secret("openai", "sk-... / sk-proj-... / sk-svcacct-... key with mixed case and digits"),
    _secret("huggingface", "hf_ followed by 30+ mixed-case letters and digits"),
    _secret("github", "ghp_/gho_/ghu_/ghs_/ghr_ tokens and github_pat_ fine-grained tokens"),
    _secret("slack", "xoxb-/xoxp-/xoxa-/xoxo-/xoxs-/xoxr-/xapp- tokens; the path of hooks.slack.com webhooks"),
    _secret("stripe", "sk_/rk_/pk_ live or test keys, whsec_ webhook secrets"),
    _secret("google", "AIza + 35 characters (Google API key)"),
    _secret("aws", "AKIA/ASIA/ABIA/ACCA access key ids; 40-character values of aws_secret_access_key"),
    _secret("jwt", "eyJ... header.eyJ... payload.signature"),
    _secret("bearer", "the credential after 'Authorization: Bearer/Basic/token' or a bare 'Bearer X' "
            "(16+ characters with a digit); the scheme word is kept"),
    _secret("url-password", "the password in scheme://user:password@host"),
    _secret("generic", "a value assigned to a password/secret/token/api_key-like name (quoted, or unquoted "
            "with a digit); a 32+ character token with mixed case, digits, Shannon entropy >= 3.6 bits and "
            "under half dictionary-like lowercase runs"),
    _secret("sendgrid", "detect-secrets SendGridDetector pattern"),
    _secret("twilio", "detect-secrets TwilioKeyDetector pattern"),
    _secret("gitlab", "detect-secrets GitLabTokenDetector patterns"),
    _secret("discord", "detect-secrets DiscordBotTokenDetector pattern"),
    _secret("telegram", "detect-secrets TelegramBotTokenDetector pattern"),
    _secret("pypi", "detect-secrets PypiTokenDetector patterns"),
    _secret("mailchimp", "detect-secrets MailchimpDetector pattern"),
    _secret("square", "detect-secrets SquareOAuthDetector pattern"),
    _secret("azure", "detect-secrets AzureStorageKeyDetector pattern (AccountKey=...)"),
    Rule("email", "<EMAIL>", "local@domain.tld (not git@..., not image@2x.png)"),
    Rule("home", "<HOME>", "the user part of /home/U, /Users/U, C:\\Users\\U, ~U/ (a bare ~U only quoted or "
         "after cd/ls/...), /root, and Claude Code's -home-U project folders"),
    Rule("ip", "<IP>", "IPv4 with four octets 0-255 (not after 'version', 'v', '§'; 127.x and 0.0.0.0 kept); IPv6 "
         "valid for ipaddress, with a digit and 3+ groups or a 4-digit group (::1 and a[1::2] kept)"),
    Rule("phone", "<PHONE>", "+CC international numbers; US (NXX) XXX-XXXX (area code 2-9); European 0-prefixed numbers "
         "with one consistent separator; 8-15 digits"),
    Rule("user", "<USER>", "a name given in Redactor(home_users=...), as a whole word anywhere"),
]
# fmt: on
_PLACEHOLDERS = {rule.kind: rule.placeholder for rule in _RULES}


def redaction_rules() -> list[Rule]:
    """(kind, placeholder, description) for every rule, for docs and the dataset card."""
    return list(_RULES)


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts, n = Counter(text), len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def _digits(s: str) -> int:
    return sum(c in "0123456789" for c in s)


def _mixed(s: str, *, upper: int = 1, lower: int = 1, digit: int = 1) -> bool:
    return (sum("A" <= c <= "Z" for c in s) >= upper and sum("a" <= c <= "z" for c in s) >= lower
            and _digits(s) >= digit)  # fmt: skip


_WORDY = regex.compile(r"[a-z]{3,}", _F)
_STRUCTURED = regex.compile(r"[0-9A-Fa-f]+|[0-9]+[A-Za-z]?[0-9]*", _F)


def looks_random(token: str) -> bool:
    """The generic test: mixed case and digits, high entropy, few lowercase runs (identifiers and paths are
    mostly words), after dropping hex and numeric pieces (UUIDs, dates, digests inside a file name)."""
    from detect_secrets.filters.heuristic import is_sequential_string

    rest = "".join(p for p in regex.split(r"[-_/]", token.rstrip("=")) if not _STRUCTURED.fullmatch(p))
    if len(rest) < 24 or not _mixed(rest, upper=2, lower=2, digit=2) or entropy(rest) < 3.6:
        return False
    return sum(map(len, _WORDY.findall(rest))) / len(rest) < 0.5 and not is_sequential_string(rest)


def _intl_phone(s: str) -> bool:
    groups = regex.findall(r"(?<![(0-9])[0-9]+(?![)0-9])", s)[1:]  # after the country code, not in parens
    return 8 <= _digits(s) <= 15 and sum(len(g) == 1 for g in groups) <= 1


def _ipv6_ok(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    groups = [g for g in s.split(":") if g]
    return _digits(s) > 0 and (len(groups) >= 3 or any(len(g) == 4 for g in groups))


def _email_ok(s: str) -> bool:
    local, _, domain = s.partition("@")
    return local.lower() != "git" and domain.rsplit(".", 1)[-1].lower() not in {"png", "jpg", "jpeg", "gif", "svg", "webp"}  # fmt: skip


class _P(NamedTuple):
    kind: str
    priority: int
    pattern: regex.Pattern[str]
    group: int | str = 0  # the replaced group
    check: Callable[[str], bool] | None = None  # a predicate on the replaced text


def _p(kind: str, priority: int, pattern: str, group: int | str = 0, check: Callable[[str], bool] | None = None) -> _P:  # fmt: skip
    return _P(kind, priority, regex.compile(pattern, _F), group, check)


_B, _E = r"(?<![A-Za-z0-9_-])", r"(?![A-Za-z0-9_-])"  # a token's edges
_KEYWORD = (r"(?i:password|passwd|passphrase|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token"
            r"|auth[_-]?token|api[_-]?key|apikey|secret[_-]?key|access[_-]?key|private[_-]?key|credentials?)")  # fmt: skip
_NAME = (
    r"(?<![A-Za-z0-9_.-])(?P<q>[\"']?)(?:[A-Za-z0-9_.-]*[_.-])?" + _KEYWORD + r"(?P=q)\]?\s*(?:=|:=|=>|:)\s*"
)
_HOME_NAME = r"[A-Za-z0-9_-](?:[A-Za-z0-9._-]*[A-Za-z0-9_-])?"
_HOME_LEFT = r"(?:(?<=file://)|(?<![A-Za-z0-9_.~/\\-])(?<!<HOME>))"

# fmt: off
_PATTERNS = [
    _p("private-key", 100, r"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----(?:(?s:.{0,20000}?)-----END[ A-Z0-9]*PRIVATE "
       r"KEY-----|(?:(?:\s|\\n)*(?:[A-Za-z0-9+/=]{16,}|(?:Proc-Type|DEK-Info):[^\n\\]*))*)"),
    _p("anthropic", 95, _B + r"sk-ant-[A-Za-z0-9_-]{20,}" + _E),
    _p("openai", 90, _B + r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}" + _E, 0,
       lambda s: _mixed(s[3:])),
    _p("huggingface", 90, _B + r"hf_[A-Za-z0-9]{30,}" + _E, 0, lambda s: _mixed(s[3:], digit=0)),
    _p("github", 90, _B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})" + _E),
    _p("slack", 90, _B + r"(?:xox[abposr]|xapp)-[A-Za-z0-9-]{10,}" + _E, 0, lambda s: _digits(s) > 0),
    _p("slack", 90, r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/(?P<t>[A-Za-z0-9_/-]{8,})", "t"),
    _p("stripe", 90, _B + r"(?:(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,})" + _E),
    _p("google", 90, _B + r"AIza[A-Za-z0-9_-]{35}" + _E),
    _p("aws", 90, r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"),
    _p("aws", 90, r"(?i:aws[_-]?secret[_-]?(?:access[_-]?)?key|secret[_-]?access[_-]?key)[\"']?\]?\s*(?:=|:=|=>|:)\s*[\"']?"
       r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])", "v"),
    _p("jwt", 80, _B + r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*" + _E),
    _p("bearer", 75, r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token)\s+"
       r"(?P<v>[A-Za-z0-9._~+/-]{8,}=*)(?![A-Za-z0-9._~+/=-])", "v"),
    _p("bearer", 74, r"(?<![A-Za-z0-9])(?i:bearer)\s+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)(?![A-Za-z0-9._~+/=-])", "v",
       lambda s: _digits(s) > 0),
    _p("url-password", 70, r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@<>\"'`]*:"
       r"(?P<v>[^\s/@<>\"'`]+)@(?=[A-Za-z0-9\[])", "v"),
    _p("generic", 60, _NAME + r"(?P<o>[\"'])(?P<v>[^\"'\s<>{}$%][^\"'\s]{5,199})(?P=o)", "v",
       lambda s: entropy(s) >= 2.0),
    _p("generic", 60, _NAME + r"(?P<v>[A-Za-z0-9+/=._~!#^*@-]{8,200})(?=$|[\s,;)\]}])", "v",
       lambda s: _digits(s) > 0 and any(c.isascii() and c.isalpha() for c in s)),
    _p("generic", 50, r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_-])", 0, looks_random),
    _p("email", 40, r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
       r"[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])", 0, _email_ok),
    _p("home", 35, _HOME_LEFT + r"(?:/mnt/[A-Za-z])?(?:/home|/Users)/" + _HOME_NAME + r"(?![A-Za-z0-9_-])"),
    _p("home", 35, _HOME_LEFT + r"/root(?![A-Za-z0-9_-]|\.[A-Za-z0-9])"),
    _p("home", 35, r"(?<![A-Za-z0-9])[A-Za-z]:(?P<s>\\\\|\\|/)Users(?P=s)(?:[A-Za-z0-9._-]+(?: [A-Za-z0-9._-]+)+"
       r"(?=\\|/)|" + _HOME_NAME + r"(?![A-Za-z0-9_-]))"),
    _p("home", 35, r"(?:(?<=[\s\"'=(:,])|^)~[A-Za-z][A-Za-z0-9_.-]{0,31}(?=[/\\])"),
    _p("home", 34, r"(?:(?<=(?<![A-Za-z0-9_-])(?:cd|ls|echo|pushd|du|find|tree|open|code|chown)\s+)|(?<=[\"']))"
       r"~[a-z][A-Za-z0-9_-]{1,31}(?=$|[\s\"';)|&])"),
    _p("home", 35, r"(?:(?<=[/\\\s\"'=])|^)(?:-home-[A-Za-z0-9_]+|-Users-[A-Za-z0-9_]+|[A-Za-z]--Users-"
       r"[A-Za-z0-9_]+|-root)(?=-|[/\\\s\"']|$)"),
    _p("ip", 30, r"(?<![A-Za-z0-9_.\u00a7])(?<!(?i:version|ver|release|section|sec\.|rfc|v)\s?)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|"
       r"[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?![A-Za-z0-9_]|\.[0-9])", 0,
       lambda s: not s.startswith("127.") and s != "0.0.0.0"),
    _p("ip", 30, r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![A-Za-z0-9_:])", 0, _ipv6_ok),
    _p("phone", 20, r"(?<![A-Za-z0-9+)\]._-])\+[1-9][0-9]{0,2}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-][0-9]{1,8}){1,6}"
       r"(?![A-Za-z0-9]|[.-][0-9])", 0, _intl_phone),
    _p("phone", 20, r"(?<![A-Za-z0-9+)\]._-])\+[1-9][0-9]{9,14}(?![A-Za-z0-9]|[.-][0-9])"),
    _p("phone", 20, r"(?<![A-Za-z0-9+._-])(?:1[ .-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}(?P<s>[ .-]))[0-9]{3}"
       r"(?(s)(?P=s)|[ .-])[0-9]{4}(?![A-Za-z0-9]|[.-][0-9])"),
    _p("phone", 20, r"(?<![A-Za-z0-9+._:/-])0[1-9][0-9]{0,3}(?P<s>[ .-])[0-9]{2,8}(?:(?P=s)[0-9]{2,8}){0,3}"
       r"(?![A-Za-z0-9]|[.:/-][0-9])", 0, lambda s: 9 <= _digits(s) <= 12),
]

_BORROWED = {  # detect-secrets regex plugins: (module, class) -> kind
    ("aws", "AWSKeyDetector"): "aws", ("azure_storage_key", "AzureStorageKeyDetector"): "azure",
    ("discord", "DiscordBotTokenDetector"): "discord", ("github_token", "GitHubTokenDetector"): "github",
    ("gitlab_token", "GitLabTokenDetector"): "gitlab", ("mailchimp", "MailchimpDetector"): "mailchimp",
    ("openai", "OpenAIDetector"): "openai", ("pypi_token", "PypiTokenDetector"): "pypi",
    ("sendgrid", "SendGridDetector"): "sendgrid", ("slack", "SlackDetector"): "slack",
    ("square_oauth", "SquareOAuthDetector"): "square", ("stripe", "StripeDetector"): "stripe",
    ("telegram_token", "TelegramBotTokenDetector"): "telegram", ("twilio", "TwilioKeyDetector"): "twilio",
}
# fmt: on


@functools.cache
def _borrowed() -> tuple[tuple[str, regex.Pattern[str]], ...]:
    """detect-secrets' denylist patterns (stdlib ``re``), loaded on first use: importing it costs ~0.1 s."""
    out = []
    for (module, name), kind in _BORROWED.items():
        plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), name)
        out.extend((kind, pattern) for pattern in plugin.denylist)
    return tuple(out)


def _alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _borrowed_spans(text: str) -> Iterable[tuple[str, int, int]]:
    for kind, pattern in _borrowed():
        for m in pattern.finditer(text):
            start, end = m.span()
            if pattern.groups and len(m.group(1) or "") >= 16:
                start, end = m.span(1)  # the secret itself (AWS secret keys); GitHub's group is its prefix
            edge = (start > 0 and _alnum(text[start - 1])) or (end < len(text) and _alnum(text[end]))
            if not edge and _digits(text[start:end]) > 0:
                yield kind, start, end


class Redactor:
    """Replaces secrets and personal details with typed placeholders; ``home_users`` adds user names (the
    machine's own user, say), redacted inside Claude Code project folders and as ``<USER>`` anywhere."""

    def __init__(self, home_users: Iterable[str] = ()) -> None:
        names = sorted({str(n) for n in home_users}, key=len, reverse=True)
        for name in names:
            if not regex.fullmatch(r"[A-Za-z0-9._-]{2,64}", name, _F) or name.isdigit():
                raise AffectlensError(f"home user {name!r}: want 2-64 letters, digits, '.', '_' or '-'")
        self.home_users = tuple(names)
        self._patterns = list(_PATTERNS)
        if names:
            alt = "|".join(regex.escape(v) for n in names for v in dict.fromkeys((n, n.replace(".", "-"))))
            self._patterns += [
                _p("home", 36, r"(?:(?<=[/\\\s\"'=])|^)(?:-home|-Users|[A-Za-z]--Users)-(?i:" + alt + r")(?=-|[/\\\s\"']|$)"),
                _p("user", 10, r"(?<![A-Za-z0-9])(?i:" + alt + r")(?![A-Za-z0-9])"),
            ]  # fmt: skip

    def findings(self, text: str) -> list[Finding]:
        """What one pass replaces, by position; overlaps go to the higher priority, then the longer."""
        candidates: list[tuple[int, int, int, str]] = []
        for rule in self._patterns:
            for m in rule.pattern.finditer(text):
                start, end = m.span(rule.group)
                if start < end and (rule.check is None or rule.check(text[start:end])):
                    candidates.append((rule.priority, start, end, rule.kind))
        candidates += [(85, start, end, kind) for kind, start, end in _borrowed_spans(text)]
        taken = [m.span() for m in PLACEHOLDER.finditer(text)]  # sorted and disjoint, as is every insert
        chosen: list[Finding] = []
        for _, start, end, kind in sorted(candidates, key=lambda c: (-c[0], c[1] - c[2], c[1])):
            i = bisect.bisect_left(taken, (start, end))
            if (i == 0 or taken[i - 1][1] <= start) and (i == len(taken) or taken[i][0] >= end):
                taken.insert(i, (start, end))
                chosen.append(Finding(kind, (start, end)))
        return sorted(chosen, key=lambda f: f.span)

    def _once(self, text: str) -> str:
        parts, last = [], 0
        for f in self.findings(text):
            parts += [text[last : f.span[0]], f.placeholder]
            last = f.span[1]
        return "".join([*parts, text[last:]])

    def redact(self, text: str) -> str:
        """``text`` with every finding replaced, repeated until stable, so redacting twice changes nothing
        (each pass that changes the text leaves fewer characters outside placeholders)."""
        for _ in range(16):
            new = self._once(text)
            if new == text:
                break
            text = new
        return text

    def redact_path(self, path: str | os.PathLike[str]) -> str:
        """A path (a transcript's file, a cwd) with the home user and anything secret-looking redacted."""
        return self.redact(os.fspath(path))


@functools.cache
def _default() -> Redactor:
    return Redactor()


def redact(text: str) -> str:
    """``text`` with every secret, email, IP, phone number and home user replaced by a typed placeholder."""
    return _default().redact(text)


def redact_path(path: str | os.PathLike[str]) -> str:
    return _default().redact_path(path)


def findings(text: str) -> list[Finding]:
    """The findings of one pass over ``text`` (kind and span), for counting what redaction removed."""
    return _default().findings(text)

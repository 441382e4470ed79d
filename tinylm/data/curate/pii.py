"""PII and secrets in a row: detect-secrets' plugins for keys and tokens, patterns for PII.

Secrets: Yelp's detect-secrets (https://github.com/Yelp/detect-secrets) through its Python API,
one plugin object per detector, `analyze_line` on each line of the row. The plugins used are
`SECRET_PLUGINS` below: the provider-format detectors (AWS access keys, PEM private keys,
GitHub/GitLab/Slack/Stripe/OpenAI/Twilio/SendGrid/Discord/PyPI/npm tokens, Azure storage keys,
JWTs, basic-auth URLs) and the two high-entropy plugins with detect-secrets' own default
limits (base64 4.5 bits/char, hex 3.0); those two only look at quoted strings, as in code.
Left out: KeywordDetector (flags prose such as 'the password is "..."' in stories) and
IPPublicDetector (an address is not a secret). A line is handed to detect-secrets only when
it holds a run of 16+ key characters, "PRIVATE KEY", or "://" -- every plugin needs one --
which keeps prose lines (nearly all of them) away from ~20 regex passes each.

PII patterns (hand-written: no maintained library covers both with a plain API; Presidio
needs a spaCy model):
- email: local@domain.tld (RFC 5322's common subset: letters, digits, ._%+- before the @,
  a dotted domain, a 2+ letter TLD);
- phone: North American numbers, (555) 123-4567 / 555-123-4567 / 555.123.4567 with an
  optional +1, and international numbers written with a +country code and 8-15 digits in
  groups (+44 20 7946 0958). Bare digit runs (order numbers, years) are not phones.

Each finding carries the row id, the kind and an excerpt with the value redacted.
"""

from __future__ import annotations

import re
from functools import lru_cache

SECRET_PLUGINS = (
    {"name": "AWSKeyDetector"}, {"name": "PrivateKeyDetector"},
    {"name": "GitHubTokenDetector"}, {"name": "GitLabTokenDetector"},
    {"name": "SlackDetector"}, {"name": "StripeDetector"}, {"name": "OpenAIDetector"},
    {"name": "TwilioKeyDetector"}, {"name": "SendGridDetector"},
    {"name": "DiscordBotTokenDetector"}, {"name": "PypiTokenDetector"},
    {"name": "NpmDetector"}, {"name": "AzureStorageKeyDetector"},
    {"name": "JwtTokenDetector"}, {"name": "BasicAuthDetector"},
    {"name": "Base64HighEntropyString", "limit": 4.5},
    {"name": "HexHighEntropyString", "limit": 3.0},
)

EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+"
                   r"[A-Za-z]{2,}(?![\w-])")
PHONE_NANP = re.compile(r"(?<![\w+-])(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"
                        r"(?![\w-])")
PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]\d{1,5}){2,5}(?![\w-])")
_MAY_HOLD_SECRET = re.compile(r"[A-Za-z0-9+/=_\-]{16,}|PRIVATE KEY|://")


@lru_cache(maxsize=1)
def secret_plugins() -> tuple:
    """The detect-secrets plugin objects, made once per process."""
    from detect_secrets.core.scan import get_plugins
    from detect_secrets.settings import transient_settings

    with transient_settings({"plugins_used": list(SECRET_PLUGINS)}):
        return tuple(get_plugins())


def redact(value: str, keep: int = 4) -> str:
    shown = value[:keep] if len(value) > 2 * keep else value[:1]
    return f"{shown}[REDACTED {len(value)} chars]"


def _phone_digits_ok(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 10 <= digits <= 15 if match.startswith("+") else digits in (10, 11)


def _line_findings(line: str) -> list[tuple[str, str, str]]:
    """(kind, value, its redacted form) of everything sensitive on one line."""
    found = []
    for m in EMAIL.finditer(line):
        local, _, domain = m.group().partition("@")
        found.append(("email", m.group(), f"{local[:1]}***@{domain}"))
    for pattern in (PHONE_NANP, PHONE_INTL):
        for m in pattern.finditer(line):
            if _phone_digits_ok(m.group()):
                found.append(("phone", m.group(), "[PHONE ..." + m.group()[-2:] + "]"))
    if _MAY_HOLD_SECRET.search(line):
        for plugin in secret_plugins():
            for secret in plugin.analyze_line(filename="row", line=line, line_number=0):
                value = secret.secret_value or ""
                found.append((f"secret: {secret.type}", value, redact(value)))
    return found


def scan_text(text: str, width: int = 40) -> list[dict]:
    """Every secret and PII finding in `text`: {"kind", "line", "excerpt"}. The excerpt is
    cut from the line with *every* finding on it redacted, not only its own."""
    findings, seen = [], set()
    for n, line in enumerate(text.split("\n"), 1):
        found = _line_findings(line)
        if not found:
            continue
        redacted = line
        for _, value, replacement in sorted(found, key=lambda f: -len(f[1])):
            if value:
                redacted = redacted.replace(value, replacement)
        for kind, _, replacement in found:
            at = max(0, redacted.find(replacement))
            excerpt = redacted[max(0, at - width):at + len(replacement) + width].strip()
            if (kind, n, excerpt) not in seen:  # NANP and international may both match
                seen.add((kind, n, excerpt))
                findings.append({"kind": kind, "line": n, "excerpt": excerpt})
    return findings


def is_secret(finding: dict) -> bool:
    return finding["kind"].startswith("secret")

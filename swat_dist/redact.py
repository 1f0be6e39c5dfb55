"""Keep credentials out of run folders and MLflow: config files, params, tags and uploaded text are redacted.

Two rules. A *key* whose last word names a secret (``hf_token``, ``api_key``, ``db_password``,
``client_secret``) has its string value replaced; a *value* that embeds credentials (``user:pass@`` in a
URI, ``token=...`` in a query, ``Bearer ...``, well-known token formats) has just that part replaced.
Numbers and booleans are never secrets, so ``model.kwargs.token_mlp_ratio: 0.5`` stays; matching the
*last* word keeps ``token_mixer`` or ``key_dim`` readable. The cost of a false positive is one unreadable
param, the cost of a false negative a leaked credential, so the value rules are deliberately broad.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

_SECRET_WORDS = {"token", "secret", "password", "passwd", "pwd", "key", "apikey", "credential", "credentials"}
_SECRET_ENDINGS = ("token", "secret", "password", "apikey", "accesskey", "privatekey")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_VALUE_RULES = [
    # scheme://user:password@host -> scheme://user:***@host (the user name helps debugging, the password never)
    (re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^/\s@]+(?P<tail>@)"), rf"\g<head>{REDACTED}\g<tail>"),
    # query or header style: ?token=..., &api_key=..., password=...
    (
        re.compile(r"(?P<head>(?:token|secret|password|passwd|api_?key|access_?key|sig|signature)=)[^&\s]+", re.I),
        rf"\g<head>{REDACTED}",
    ),
    (re.compile(r"(?P<head>\bBearer\s+)[^\s'\"]+", re.I), rf"\g<head>{REDACTED}"),
    # Hugging Face, GitHub, OpenAI-style and AWS access key ids
    (
        re.compile(r"\b(?:hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16})\b"),
        REDACTED,
    ),
]


def secret_key(key: str) -> bool:
    """Does the last word of the key's last dotted segment name a secret? (``model.name`` does not.)"""
    last = _CAMEL.sub("_", key.rsplit(".", 1)[-1]).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", last) if w]
    if not words:
        return False
    return words[-1] in _SECRET_WORDS or words[-1].endswith(_SECRET_ENDINGS) or "password" in last or "secret" in last


def redact_text(text: str) -> str:
    """``text`` with every embedded credential replaced by ``***``."""
    for pattern, replacement in _VALUE_RULES:
        text = pattern.sub(replacement, text)
    return text


def redact_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        return REDACTED if value and secret_key(key) else redact_text(value)
    return value


def redact(items: dict[str, Any]) -> dict[str, Any]:
    """A copy of a flat ``{key: value}`` mapping that is safe to log as params or tags."""
    return {k: redact_value(k, v) for k, v in items.items()}


def redact_tree(tree: Any, key: str = "") -> Any:
    """A nested config tree (dicts, lists, scalars) with the same rules applied (for the uploaded config)."""
    if isinstance(tree, dict):
        return {k: redact_tree(v, f"{key}.{k}" if key else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact_tree(v, key) for v in tree]
    return redact_value(key, tree)

"""What espzoo writes for others to read (provenance.json, config.yaml, an exported repo) holds no secrets and,
once exported, no paths of the machine it was made on.

    redact(["espzoo", "finetune", "--conf", "hf_token=hf_abc..."])   # -> [..., "hf_token=<redacted>"]
    public(provenance, root=out)   # also: absolute paths become relative to `root`, or their last part

A secret is a Hugging Face token (`hf_...`), what follows `Bearer`, the value of a `name=value` whose name ends
in token/key/secret/password, the argument after such an option (`--hf-token X`), and a mapping's value under
such a key. Names like `token_list` or `token_type` do not end so, and are kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"
_SECRET_NAME = r"[\w.-]*(?:token|key|secret|password|passwd|credentials?)"
_SECRET_NAME_RE = re.compile(rf"(?i)-*{_SECRET_NAME}")
_PATTERNS = (
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), REDACTED),  # Hugging Face user and org tokens
    (re.compile(r"(?i)\b(bearer)\s+[^\s,;]+"), rf"\1 {REDACTED}"),
    (re.compile(rf"(?i)\b({_SECRET_NAME})=([^\s,;&]+)"), rf"\1={REDACTED}"),
)
# An absolute POSIX path inside a string (not the //host part of a URL).
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:[^\s/,:;'\"`]+/)*[^\s/,:;'\"`]*")
_KEEP_KEYS = frozenset({"token_list"})  # tokens are data: never rewritten


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(node: Any, key: str = "") -> Any:
    """`node` with every secret replaced by <redacted>: strings, lists (an option's argument too) and mappings."""
    if key in _KEEP_KEYS:
        return node
    if isinstance(node, dict):
        return {k: REDACTED if _secret_name(k) and node[k] not in (None, "") else redact(v, str(k))
                for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        out, hide_next = [], False
        for item in node:
            if hide_next and isinstance(item, str):
                out.append(REDACTED)
                hide_next = False
                continue
            hide_next = isinstance(item, str) and item.startswith("-") and "=" not in item and _secret_name(item)
            out.append(redact(item, key))
        return type(node)(out) if isinstance(node, tuple) else out
    if isinstance(node, str):
        return redact_text(node)
    return node


def public(node: Any, root: str | Path | None = None, key: str = "") -> Any:
    """redact(node), and every absolute path in it made relative to `root` (when inside it) or cut to its last
    part: what an exported repo may say about the machine it was made on."""
    if key in _KEEP_KEYS:
        return node
    node = redact(node, key)
    if isinstance(node, dict):
        return {k: public(v, root, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [public(v, root, key) for v in node]
    if isinstance(node, str):
        return _ABSOLUTE.sub(lambda m: _local_part(m.group(0), root), node)
    return node


def _local_part(path: str, root: str | Path | None) -> str:
    if root is not None:
        try:
            return Path(path).relative_to(Path(root).resolve()).as_posix() or "."
        except ValueError:
            pass
    return Path(path).name or path


def _secret_name(name: Any) -> bool:
    return isinstance(name, str) and _SECRET_NAME_RE.fullmatch(name) is not None

"""JSON text exactly as Go's ``encoding/json`` writes it (compact, HTML-safe escaping).

etcd stores member records and its v2 store as ``json.Marshal`` output; byte-identical
restores need Go's string escaping, which differs from Python's ``json.dumps``: ``<``,
``>`` and ``&`` become ``\\u003c``/``\\u003e``/``\\u0026``, U+2028/U+2029 are escaped, and
non-ASCII text stays raw UTF-8.
"""

from __future__ import annotations

_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def string(text: str) -> str:
    """``text`` as a Go JSON string literal."""
    out = ['"']
    for ch in text:
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif ch in _HTML:
            out.append(_HTML[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def strings(items: tuple[str, ...] | list[str]) -> str:
    """A Go JSON array of strings (``null`` is never wanted here, so empty is ``[]``)."""
    return "[" + ",".join(string(s) for s in items) + "]"

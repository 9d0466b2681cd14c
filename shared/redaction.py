"""Scrub configured secret values out of text bound for a dead letter, a log or an error message."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:  # config.py masks its URLs with safe_url below: a runtime import would be circular
    from hooklane.shared.config import Config

MASK = "[redacted]"


def safe_url(url: str, *, keep_query: bool = False) -> str:
    """`url` as a message, a log line or a terminal may show it.

    Credentials become ``***@`` (they are there, not what they are); a token in the path
    (``/webhooks/<source>/<token>``) becomes ``***``; the query and fragment, where tokens and
    signatures ride, are dropped unless `keep_query` (a Redis URL's options say how it connects).
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    segments = parts.path.split("/")
    if len(segments) > 3 and segments[1] == "webhooks":
        segments = [*segments[:3], "***"]
    shown = f"{parts.scheme}://{netloc}{'/'.join(segments)}"
    if keep_query:
        shown += f"?{parts.query}" if parts.query else ""
        shown += f"#{parts.fragment}" if parts.fragment else ""
    return shown


class Redactor:
    def __init__(self, values: list[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        self.values = sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)

    @classmethod
    def from_config(cls, config: Config) -> Redactor:
        values: list[str] = []
        for src in config.sources.values():
            values += [s.reveal().decode("utf-8", "replace") for s in (*src.secrets, *src.tokens)]
        for h in config.handlers.values():
            if h.secret is not None:
                values.append(h.secret.reveal().decode("utf-8", "replace"))
            if h.url:
                parts = urlsplit(h.url)
                if parts.password:
                    values.append(parts.password)
                values += [v for _, v in parse_qsl(parts.query)]
            values += list(h.headers.values())
        return cls(values)

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return text

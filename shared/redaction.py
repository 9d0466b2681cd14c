"""Scrub configured secret values out of text bound for a dead letter, a log or an error message."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from hooklane.shared.config import Config

MASK = "[redacted]"


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

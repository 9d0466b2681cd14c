"""docs/providers-twilio-vapi-hmac.md's examples are real: every TOML block loads as the providers it names."""

from __future__ import annotations

import re
from pathlib import Path

from hooklane.shared import config as config_mod

DOC = (Path(__file__).parent.parent / "docs" / "providers-twilio-vapi-hmac.md").read_text(encoding="utf-8")


def test_every_example_source_in_the_provider_doc_loads() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC, re.S)
    assert len(blocks) == 3
    text = "\n".join(blocks)
    env = {name: f"value-of-{name}" for name in re.findall(r'"env:([A-Z_]+)"', text)}
    config = config_mod.loads(text, env=env)
    assert {s.provider for s in config.sources.values()} == {"twilio", "vapi", "hmac"}
    assert {s.options.auth for s in config.sources.values() if s.provider == "vapi"} == {"bearer", "secret", "hmac"}

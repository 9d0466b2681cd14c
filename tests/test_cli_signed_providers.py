"""`hooklane dev`'s sample config, `send` and `check-config` for every provider (retell, telnyx and
standardwebhooks included): what `send` signs, the source of the same name verifies."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import TEST_ENV

from hooklane.ingest.auth import authenticate
from hooklane.operators import sending
from hooklane.operators.cli import dev, main
from hooklane.shared import config as config_mod
from hooklane.shared.providers import PROVIDERS


def dev_config() -> config_mod.Config:
    return config_mod.load(dev.SAMPLE_CONFIG, env=dev.DEV_ENV)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_the_dev_config_has_a_source_per_provider_that_accepts_what_send_signs(provider: str) -> None:
    source = dev_config().sources[provider]
    assert source.provider == provider
    for seq, event_type in enumerate(sending.event_types(provider)):
        wire = sending.build_delivery(provider, source, event_type, seq=seq, run="t")
        token = parse_qs(urlsplit(wire.url_suffix).query).get("token", [None])[0]
        authenticate(source, PROVIDERS[provider], body=wire.body,
                     headers={k.lower(): v for k, v in wire.headers.items()}, token=token, ip="127.0.0.1")


CONFIG = """
[[sources]]
name = "rt"
provider = "retell"
secrets = ["env:RETELL_API_KEY", "env:RETELL_API_KEY_OLD"]

[[sources]]
name = "tx"
provider = "telnyx"
secrets = ["env:TELNYX_PUBLIC_KEY"]
tolerance_seconds = 120

[[sources]]
name = "sw"
provider = "standardwebhooks"
secrets = ["env:SW_SECRET"]
"""


def test_check_config_lists_the_sources_by_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hooklane.toml"
    path.write_text(CONFIG, encoding="utf-8")
    assert main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "/webhooks/rt  provider=retell  auth: signature (2 secrets: env:RETELL_API_KEY, env:RETELL_API_KEY_OLD;" \
        in out
    assert "/webhooks/tx  provider=telnyx  auth: signature (1 secret: env:TELNYX_PUBLIC_KEY; tolerance 120s)" in out
    assert "/webhooks/sw  provider=standardwebhooks" in out
    assert not any(value in out for value in TEST_ENV.values())


@pytest.mark.parametrize(("var", "value", "key"), [
    ("TELNYX_PUBLIC_KEY", "bm90IDMyIGJ5dGVz", "sources[1].secrets[0]"),
    ("SW_SECRET", "whsec_not base64!", "sources[2].secrets[0]"),
])
def test_check_config_names_a_key_that_can_never_verify(var: str, value: str, key: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hooklane.toml"
    path.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(path), "check-config"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{key}: " in err
    assert value not in err


def test_send_to_a_telnyx_source_holding_only_its_public_key_explains_why_it_cannot_sign(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hooklane.toml"
    path.write_text(CONFIG, encoding="utf-8")
    code = main(["--config", str(path), "send", "telnyx", "--url", "http://127.0.0.1:9/webhooks/tx"])
    assert code == 2
    assert "private key" in capsys.readouterr().err

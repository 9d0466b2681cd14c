"""The README's examples are real: its config loads, its commands exist."""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from hooklane.operators.cli import build_parser
from hooklane.shared import config as config_mod

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_readme_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [toml] = re.findall(r"```toml\n(.*?)```", README, re.S)
    env = {name: f"value-of-{name}" for name in re.findall(r'"env:([A-Z_]+)"', toml)}
    # The example's python handler names a user module; give it one.
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(textwrap.dedent("""
        def on_call(event):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_mod.loads(toml, env=env)
    assert set(config.sources) == {"volumereach", "voipbin"}
    assert set(config.handlers) == {"crm", "dnc", "mine"}
    assert [h.name for h in config.handlers_for("call.completed", "volumereach")] == ["crm", "dnc"]
    sys.modules.pop("mypackage.hooks", None)
    sys.modules.pop("mypackage", None)


def test_every_hooklane_command_in_the_readme_parses() -> None:
    parser = build_parser()
    lines = [ln.strip() for ln in re.findall(r"^\s*(?:\.venv/bin/)?(hooklane [^\n#]*)", README, re.M)]
    assert len(lines) >= 10
    for line in lines:
        argv = shlex.split(line.replace("…", "").rstrip("& "))[1:]
        # Synopsis lines: `[...]` optional groups and `A | B` alternatives, all given at once.
        argv = [a.strip("[]") for a in argv if a not in ("|", "[filters]")]
        # Placeholder values of the synopsis lines, by the type the option takes.
        argv = [{"N": "5", "C": "2", "R": "0.1", "PROVIDER": "volumereach", "ID": "abc"}.get(a, a) for a in argv]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"README command does not parse: {line!r} ({exc})")

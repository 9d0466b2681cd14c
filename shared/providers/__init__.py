"""The provider registry: one module per provider, one line per provider here.

Adding a provider is adding ``shared/providers/<name>.py`` (see ``base.py`` for
the contract), its line below, and ``tests/fixtures/<name>/``;
``tests/test_provider_registry.py`` fails until all three exist.
"""

from __future__ import annotations

from hooklane.shared.providers import voicekit, voipbin, volubile, volumereach, voxpria
from hooklane.shared.providers.base import Provider

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        volumereach.PROVIDER,
        voxpria.PROVIDER,
        volubile.PROVIDER,
        voipbin.PROVIDER,
        voicekit.PROVIDER,
    )
}

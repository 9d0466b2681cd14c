"""Code both processes use: config, the delivery envelope, the canonical event,
providers (verify + normalize), Redis, logging, and the `hooklane` CLI."""

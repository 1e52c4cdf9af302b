"""How long-running work lives: signals, supervised loops with backoff,
systemd's notify protocol."""

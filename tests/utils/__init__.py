"""Shared test helpers: a local HTTP server, tiny models and DDP runners."""

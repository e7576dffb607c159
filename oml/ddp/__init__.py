"""Distributed (DDP) helpers: process-group queries, gathering of dicts, and DataLoader patching."""

"""The index run's decisions, without Ray: plan, settle, commits, rows, poison."""

"""Commands that check a config change before it ships: check-config, diff, preview, and the versioned config store (config push/log/show/rollback)."""

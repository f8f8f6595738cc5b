"""One module per ``scenetrigger`` subcommand, each with ``register(subparsers)``."""

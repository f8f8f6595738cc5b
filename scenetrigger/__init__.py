"""scenetrigger: the command line and the embedded (in-process) runtime."""

__version__ = "0.1.0"

"""scenetrigger: what sits on top of the engine and the delivery, by role: the command
line (``cli``), the embedded runtimes (``runtime``), HTTP serving (``serve``), the
operator ``console``, the ``demo`` and operations on user data (``ops``)."""

__version__ = "0.1.0"

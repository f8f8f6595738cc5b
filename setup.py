"""The optional C line scanner of sharded replay (scenetrigger/runtime/_linescan.c).

Built when a C compiler is present; without one the install goes on and
replay runs the pure-Python scanner (same results, slower sharding).
Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("scenetrigger.runtime._linescan",
                             ["scenetrigger/runtime/_linescan.c"], optional=True)])

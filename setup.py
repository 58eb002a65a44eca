"""Build the compiled core ``eventpush._core`` (everything else is declared in pyproject.toml).

``EVENTPUSH_PURE=1`` skips the extension (pure-Python twin only); ``EVENTPUSH_CYTHON_TRACE=1`` builds with line
tracing for coverage of the ``.pyx`` (never for release wheels).
"""

import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_spec = importlib.util.spec_from_file_location(
    "_eventpush_envflags", os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "eventpush", "_envflags.py")
)
_envflags = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_envflags)
env_flag = _envflags.env_flag

ext_modules = []
if not env_flag("EVENTPUSH_PURE"):
    from Cython.Build import cythonize

    trace = env_flag("EVENTPUSH_CYTHON_TRACE")
    macros = [("CYTHON_TRACE_NOGIL", "1"), ("CYTHON_TRACE", "1")] if trace else []
    extra_compile_args = [] if sys.platform == "win32" else ["-O3"]
    ext_modules = cythonize(
        [
            Extension(
                "eventpush._core",
                ["src/eventpush/_core.pyx"],
                define_macros=macros,
                extra_compile_args=extra_compile_args,
            )
        ],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
            "linetrace": trace,
            "freethreading_compatible": False,
        },
    )


class BuildExt(build_ext):
    """The compiled core is required unless EVENTPUSH_PURE=1: when it does not build, say how to get the twin."""

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            sys.stderr.write(
                "\n*** eventpush: the compiled core (eventpush._core) did not build (compiler output above, error\n"
                "*** below). Install a C compiler and the Python headers, or install the pure-Python twin instead\n"
                "*** (same behaviour, slower) with EVENTPUSH_PURE=1, e.g.  EVENTPUSH_PURE=1 pip install eventpush\n\n"
            )
            raise


setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})

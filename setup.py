"""Build the optional compiled parts: the Cython twin of the codec, the SQLite connection the
SQLite backend writes small batches through, and the PostgreSQL backend's array builder. All
metadata lives in pyproject.toml.

Development builds in place: ``python setup.py build_ext --inplace``, or ``python
ext/build_inplace.py`` where the virtual environment's setuptools is too old to read
pyproject.toml (it builds the same extensions without reading project metadata).

``SNAPSTATE_DEBUG=1`` builds with line tracing (for coverage and profiling) and writes Cython's
HTML annotation next to the sources. ``SNAPSTATE_NO_EXT=1`` skips the extensions (the pure-Python
codec, Python's ``sqlite3`` and the Python array builder are then used). Neither needs more than
Cython and a C compiler: the SQLite connection finds SQLite's functions at run time, in the
library Python's ``sqlite3`` module runs on.
"""

import os

from setuptools import setup

DEBUG = os.environ.get("SNAPSTATE_DEBUG", "") not in ("", "0")
NO_EXT = os.environ.get("SNAPSTATE_NO_EXT", "") not in ("", "0")

# One set of directives for every module.
DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
    "linetrace": DEBUG,
}


def extensions():
    if NO_EXT:
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    flags = ["-O2"] if not DEBUG else ["-O0", "-g"]
    codec = Extension(
        "snapstate.codec._native",
        ["ext/_codec.pyx"],
        define_macros=macros,
        # It starts threads of its own to compress a large value's chunks (libpthread is
        # apart from libc before glibc 2.34).
        extra_compile_args=[*flags, "-pthread"],
        extra_link_args=["-pthread"],
    )
    sqlite = Extension(
        "snapstate.backends._sqlite_native",
        ["ext/_sqlite.pyx"],
        define_macros=macros,
        extra_compile_args=flags,
    )
    pg = Extension(
        "snapstate.backends._pg_native",
        ["ext/_pg.pyx"],
        define_macros=macros,
        extra_compile_args=flags,
    )
    return cythonize([codec, sqlite, pg], compiler_directives=DIRECTIVES, annotate=DEBUG)


if __name__ == "__main__":
    setup(ext_modules=extensions())

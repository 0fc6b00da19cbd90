"""Build the Cython placement engine (hami/_core).

Cython directives are set once, here, for every extension (STYLE §6.15). Set
HAMI_CYTHON_DEBUG=1 to compile with bounds and initialisation checks on (CI's
debug job and local debugging); the default is the fast build.
"""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("HAMI_CYTHON_DEBUG") == "1"

DIRECTIVES = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

extensions = [
    Extension(
        "hami._core._kernels",
        ["hami/_core/_kernels.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES, quiet=True))

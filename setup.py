"""Build the Cython placement engine (hami/_core) and the simulated NVML (native/fakenvml).

Cython directives are set once, here, for every extension (STYLE §6.15). Set
HAMI_CYTHON_DEBUG=1 to compile with bounds and initialisation checks on (local debugging);
the default is the fast build.

`native/fakenvml/*.c` is compiled into `hami/sim/_lib/libnvidia-ml.so.1`: a shared library
with NVML's ABI over simulated GPUs, loaded by tests and the local control plane (never by
production code, which loads the real `libnvidia-ml.so.1`).
"""

import os
import subprocess
import warnings
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.warnings import InformationOnly

# setuptools' notices that ask for nothing (every editable install prints "Editable installation.
# Please be careful with folders ... same name as your package"): keeps `make setup` quiet.
# Real warnings still show; the package-data one is fixed in pyproject.toml (include-package-data).
warnings.filterwarnings("ignore", category=InformationOnly)

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

FAKENVML_SOURCES = sorted(glob("native/fakenvml/*.c"))
FAKENVML_TARGET = os.path.join("hami", "sim", "_lib", "libnvidia-ml.so.1")


class BuildExtWithFakeNvml(build_ext):
    """build_ext, plus the simulated libnvidia-ml as a plain shared library."""

    def run(self):
        super().run()
        if not FAKENVML_SOURCES:
            return
        target = FAKENVML_TARGET if self.inplace else os.path.join(self.build_lib, FAKENVML_TARGET)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        cmd = [os.environ.get("CC", "gcc"), "-shared", "-fPIC", "-O2", "-Wall", "-std=gnu11",
               "-fvisibility=default", "-o", target, *FAKENVML_SOURCES, "-lpthread"]
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)


extensions = [
    Extension(
        "hami._core._kernels",
        ["hami/_core/_kernels.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    ),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES, quiet=True),
    cmdclass={"build_ext": BuildExtWithFakeNvml},
)

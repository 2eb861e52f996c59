"""Build fastml's Cython kernels.

Environment switches:
  FASTML_PORTABLE=1   build without -march=native (for wheels that must run on other CPUs)
  FASTML_DEBUG=1      turn Cython bounds checks back on and compile with -O0 -g
  FASTML_EXT=_name    build only that extension (developers: python setup.py build_ext --inplace)
"""
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTML_DEBUG") == "1"
PORTABLE = os.environ.get("FASTML_PORTABLE") == "1"

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
# NaN and inf must survive (trees and SVMs route on them), so no -ffast-math:
# only the flags that do not change results on finite or non-finite values.
compile_args += ["-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=c11", "-ffp-contract=fast"]
if not PORTABLE and not DEBUG:
    compile_args.append("-march=native")
link_args = ["-fopenmp"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}


def ext(name):
    return Extension(
        f"fastml.kernels.{name}",
        [f"kernels/{name}.pyx"],
        include_dirs=[np.get_include(), "kernels/src"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        depends=[os.path.join("kernels/src", f) for f in os.listdir("kernels/src")],
    )


extensions = [ext(n[:-4]) for n in sorted(os.listdir("kernels")) if n.endswith(".pyx")]
if os.environ.get("FASTML_EXT"):  # developers: rebuild one extension, e.g. FASTML_EXT=_linear
    extensions = [e for e in extensions if e.name.endswith("." + os.environ["FASTML_EXT"])]

setup(
    packages=["fastml", "fastml.backends", "fastml.kernels", "fastml.converters", "fastml.search"],
    package_dir={"fastml.kernels": "kernels", "fastml.converters": "converters"},
    package_data={"fastml": ["py.typed"], "fastml.kernels": ["*.pyx", "*.pxd", "src/*.h"]},
    ext_modules=cythonize(extensions, compiler_directives=directives, quiet=True,
                          include_path=["kernels"]),  # shared .pxd files (cimport _layout)
    zip_safe=False,
)

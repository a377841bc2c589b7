"""What pyproject.toml cannot say: the build step that describes containerd's API for the
agent (packaging/containerd_api.py) before the package's files are collected.  Without
containerd's .proto files or protoc the package is built all the same, without it."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "packaging"))
import containerd_api  # noqa: E402


class BuildPy(build_py):
    def run(self):
        why = containerd_api.build()
        if why:
            print(f"hsflowd: containerd {{}} and k8s {{}} will not work: {why}", file=sys.stderr)
        super().run()


setup(cmdclass={"build_py": BuildPy})

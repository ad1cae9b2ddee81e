"""Which packages the wheel holds; everything else is in pyproject.toml.

The library's packages are found, not listed; ``pipelines/`` installs as ``snappy_pipelines`` (no
generic top-level name), a rename that ``[tool.setuptools.packages.find]`` cannot express.
"""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["snappy", "snappy.*"]) + ["snappy_pipelines"],
      package_dir={"snappy_pipelines": "pipelines"})

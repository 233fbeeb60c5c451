"""The wheel's packages: petloc's own, and the top-level conf/ tree as ``petloc.conf``.

conf/ stays at the repository's top level, where an editable install reads it, and ships inside the
wheel as petloc/conf; :data:`petloc.CONFIG_DIR` finds either. Every config group folder is listed as
a package of its own so that setuptools copies its YAML files (pyproject.toml's ``"*" = ["*.yaml"]``).
Everything else about the project is in pyproject.toml.
"""

from setuptools import find_namespace_packages, find_packages, setup

setup(
    packages=[
        *find_packages(include=["petloc", "petloc.*"]),
        *(f"petloc.{name}" for name in find_namespace_packages(include=["conf", "conf.*"])),
    ],
    package_dir={"petloc.conf": "conf"},
)

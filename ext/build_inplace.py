"""Build the compiled codec in place, next to the sources, for development.

Same extensions and compiler directives as ``setup.py`` (which it imports), but without reading
project metadata from pyproject.toml, so it also works where the environment's setuptools is
older than the metadata needs (``setup.py build_ext --inplace`` then fails on the license
field). Run from the repository root: ``python ext/build_inplace.py``.
"""

import os
import runpy

from setuptools import Distribution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    os.chdir(ROOT)
    setup_globals = runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="snapstate_setup")
    dist = Distribution({"ext_modules": setup_globals["extensions"](), "package_dir": {"": "src"}})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    cmd.ensure_finalized()
    cmd.run()


if __name__ == "__main__":
    main()

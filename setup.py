"""Build in a temporary folder, so that `pip install .` leaves the source tree as it was.

All the metadata is in pyproject.toml; this file only moves setuptools' working folders
(build/ and metalstm.egg-info/, written into the source tree by default) to a temporary folder
that is removed when the build step ends. The wheel itself goes where pip asks for it.
"""
import atexit
import shutil
import tempfile

from setuptools import setup

work = tempfile.mkdtemp(prefix="metalstm-build-")
atexit.register(shutil.rmtree, work, True)
setup(options={"build": {"build_base": f"{work}/build"}, "egg_info": {"egg_base": work}})

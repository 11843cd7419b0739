"""Makes the Triton kernels importable as `ugcn_fast.kernels` from an install and from a checkout alike.

The design card keeps Triton code in the top-level `kernels/` folder. `setup.py` installs that folder as the
subpackage `ugcn_fast.kernels` (package_dir mapping), so an installed package needs nothing from here. In a
source checkout (running from the repository, PYTHONPATH=.) the folder sits beside `ugcn_fast/` instead; we
then register it under the same name, so every import in the package is written one way.
"""
import importlib.util
import os
import sys

_package_dir = os.path.dirname(os.path.abspath(__file__))
_checkout_kernels = os.path.join(os.path.dirname(_package_dir), "kernels")

if (
    "ugcn_fast.kernels" not in sys.modules
    and importlib.util.find_spec("ugcn_fast.kernels") is None
    and os.path.isfile(os.path.join(_checkout_kernels, "__init__.py"))
):
    _spec = importlib.util.spec_from_file_location(
        "ugcn_fast.kernels", os.path.join(_checkout_kernels, "__init__.py"),
        submodule_search_locations=[_checkout_kernels],
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["ugcn_fast.kernels"] = _module
    _spec.loader.exec_module(_module)
    setattr(sys.modules["ugcn_fast"], "kernels", _module)

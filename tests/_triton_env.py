"""What every Triton test module needs before anything else: without a CUDA GPU, Triton's interpreter switched on
(TRITON_INTERPRET=1, which must happen before triton is imported: its own jit'd library is decorated at import),
and a clean module-level skip wherever the kernels cannot run. Import it first; it exports INTERPRET and DEVICE."""
import os
import sys

import pytest
import torch

if not torch.cuda.is_available():  # torch.cuda.is_available() does not import triton
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set (no CUDA GPU): run with "
                    "TRITON_INTERPRET=1 in the environment", allow_module_level=True)
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("the Triton kernels need a CUDA GPU or TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = "cpu" if INTERPRET else "cuda"

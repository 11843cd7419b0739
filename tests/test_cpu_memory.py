"""ugcn_fast.cpu_memory.keep_freed_memory: what our command-line tools call to keep freed memory in the process."""
import ctypes
import ctypes.util
import platform
import sys

import pytest

from ugcn_fast import cpu_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_sets_both_glibc_thresholds(monkeypatch):
    calls = []
    libc = ctypes.CDLL(ctypes.util.find_library("c"))

    class Recording:
        def __getattr__(self, name):
            if name != "mallopt":
                return getattr(libc, name)

            def mallopt(param, value):
                calls.append((param, value))
                return libc.mallopt(param, value)
            return mallopt

    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: Recording())
    assert cpu_memory.keep_freed_memory() is True
    assert calls == [(-3, 32 << 20), (-1, 1 << 30)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def test_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv(cpu_memory.DISABLE_ENV, "0")
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: pytest.fail("must not load the C library"))
    assert cpu_memory.keep_freed_memory() is False


def test_other_c_libraries_are_left_alone(monkeypatch):
    class NotGlibc:  # a C library without glibc's version function (musl): nothing to set
        mallopt = staticmethod(lambda *a: pytest.fail("must not call mallopt"))

    monkeypatch.delenv(cpu_memory.DISABLE_ENV, raising=False)
    monkeypatch.setattr(cpu_memory.sys, "platform", "linux")
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: NotGlibc())
    assert cpu_memory.keep_freed_memory() is False

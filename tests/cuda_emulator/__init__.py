"""The CUDA emulator of the tests: csrc/cuda built for the CPU (see build.py)."""

"""Builds ugcn_fast's native modules without torch: pybind11 modules that take raw pointers.

    ugcn_fast._C     C++ CPU kernels (csrc/cpu), OpenMP, -O3, vectorised for the build machine's CPU.
    ugcn_fast._cuda  CUDA kernels (csrc/cuda), compiled by nvcc whenever a CUDA toolkit is found.

Environment:
    UGCN_FAST_BUILD_CUDA   "1" forces the CUDA module (fails without nvcc), "0" skips it; unset: build it if
                           nvcc is found (CUDA_HOME/bin/nvcc or nvcc on PATH).
    UGCN_FAST_CUDA_ARCHS   semicolon list of SM versions (default "75;80;90"; PTX of the last is embedded too).
    UGCN_FAST_CPU_ARCH     value of -march for the CPU module (default "native"; empty: no -march flag, a
                           portable build).
    UGCN_FAST_NO_NATIVE    "1" builds no native module at all (a pure-Python install; the reference runs).
    UGCN_FAST_BUILD_JOBS   parallel compiler jobs (default: one a CPU): the two modules build side by side, the
                           C++ sources of each in parallel, and nvcc compiles the SM versions in parallel.

Triton kernels live in the top-level kernels/ folder and are installed as the subpackage ugcn_fast.kernels.
"""
import os
import platform
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


def _find_nvcc():
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and os.path.isfile(os.path.join(cuda_home, "bin", "nvcc")):
        return os.path.join(cuda_home, "bin", "nvcc")
    return shutil.which("nvcc")


def _cuda_home(nvcc):
    """CUDA_HOME, else the toolkit nvcc itself reports (nvcc on PATH may be a wrapper script elsewhere)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
        for line in (dry.stdout + dry.stderr).splitlines():
            if "TOP=" in line:
                return os.path.normpath(line.split("TOP=", 1)[1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def _cuda_lib_dir(home):
    for sub in ("lib64", os.path.join("targets", "x86_64-linux", "lib"), os.path.join("targets", "sbsa-linux", "lib"), "lib"):
        if os.path.isfile(os.path.join(home, sub, "libcudart_static.a")):
            return os.path.join(home, sub)
    return os.path.join(home, "lib64")


def _build_jobs() -> int:
    jobs = os.environ.get("UGCN_FAST_BUILD_JOBS", "")
    return int(jobs) if jobs.strip().isdigit() and int(jobs) > 0 else (os.cpu_count() or 1)


def _nvcc_threads(nvcc) -> list:
    """nvcc's parallel compilation of the SM versions (--threads, CUDA 11.2 and later), where nvcc has it."""
    try:
        help_text = subprocess.run([nvcc, "--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [f"--threads={_build_jobs()}"] if "--threads" in help_text else []


class BuildExtWithNvcc(build_ext):
    """build_ext that compiles .cu sources with nvcc into objects linked into the extension; the extensions build
    in parallel (build_ext's own option, on by default here), and their C++ sources too (pybind11's
    ParallelCompile, installed below)."""

    def finalize_options(self):
        if self.parallel is None:
            self.parallel = _build_jobs()
        super().finalize_options()

    def build_extension(self, ext):
        import pybind11

        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        if cu_sources:
            nvcc = ext.nvcc
            os.makedirs(self.build_temp, exist_ok=True)
            archs = [a.strip() for a in os.environ.get("UGCN_FAST_CUDA_ARCHS", "75;80;90").split(";") if a.strip()]
            gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
            gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
            threads = _nvcc_threads(nvcc)
            for source in cu_sources:
                obj = os.path.join(self.build_temp, os.path.basename(source) + ".o")
                # --fmad=false: no FMA contraction, so x × x is exactly 0 (see the CPU flags)
                cmd = [nvcc, "-O3", "-std=c++17", "--fmad=false", "-Xcompiler", "-fPIC", "-Xcompiler",
                       "-fvisibility=hidden", "-I", "csrc", "-I", pybind11.get_include(), *gencode,
                       *threads, "-c", source, "-o", obj]
                print(" ".join(cmd), flush=True)
                subprocess.check_call(cmd)
                ext.extra_objects.append(obj)
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        super().build_extension(ext)


def _extensions():
    if os.environ.get("UGCN_FAST_NO_NATIVE") == "1":
        return []
    import pybind11
    from pybind11.setup_helpers import ParallelCompile

    ParallelCompile(default=_build_jobs()).install()  # each extension's C++ sources compile in parallel

    march = os.environ.get("UGCN_FAST_CPU_ARCH", "native")
    # -fno-math-errno lets sqrt vectorise (we never read errno); -ffp-contract=off keeps x × x exactly 0 (an FMA
    # would leave the rounding error of one product, and a static target's den would be noise when eps = 0; it
    # costs nothing measurable here); on x86, AVX-512 CPUs run the simd loops 16 floats wide only when asked to
    # prefer 512-bit vectors. -fno-trapping-math (we never read floating-point exception flags) lets GCC
    # if-convert ReLU's backward select `out <= 0 ? 0 : grad` feeding arithmetic; without it the ST-GCN block's
    # backward loops stay scalar (4-6x slower). It changes no result: rounding stays IEEE.
    cpu_flags = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
                 "-fvisibility=hidden"]
    if march:
        cpu_flags.append(f"-march={march}")
        if platform.machine().lower() in ("x86_64", "amd64"):
            cpu_flags.append("-mprefer-vector-width=512")
    extensions = [
        Extension(
            "ugcn_fast._C",
            sources=["csrc/cpu/motion_loss.cpp", "csrc/cpu/stgcn_block.cpp", "csrc/cpu/stgcn_gemm.cpp",
                     "csrc/cpu/stgcn_fold.cpp", "csrc/cpu/bindings.cpp"],
            depends=["csrc/motion_loss_math.h", "csrc/stgcn_block_math.h", "csrc/cpu/motion_loss.h",
                     "csrc/cpu/stgcn_block.h", "csrc/cpu/stgcn_gemm.h", "csrc/cpu/stgcn_fold.h",
                     "csrc/cpu/aligned_buffer.h"],
            include_dirs=[pybind11.get_include(), "csrc"],
            extra_compile_args=cpu_flags,
            extra_link_args=["-fopenmp"],
            language="c++",
        )
    ]
    want_cuda = os.environ.get("UGCN_FAST_BUILD_CUDA")
    nvcc = _find_nvcc()
    if want_cuda == "1" and nvcc is None:
        sys.exit("UGCN_FAST_BUILD_CUDA=1 but no nvcc was found (set CUDA_HOME or put nvcc on PATH)")
    if nvcc is not None and want_cuda != "0":
        home = _cuda_home(nvcc)
        cuda = Extension(
            "ugcn_fast._cuda",
            sources=["csrc/cuda/motion_loss.cu", "csrc/cuda/stgcn_block.cu", "csrc/cuda/bindings.cpp"],
            depends=["csrc/motion_loss_math.h", "csrc/stgcn_block_math.h", "csrc/cuda/half_types.h",
                     "csrc/cuda/host_checks.h", "csrc/cuda/motion_loss_cuda.h",
                     "csrc/cuda/stgcn_block_cuda.h"],
            include_dirs=[pybind11.get_include(), "csrc", os.path.join(home, "include")],
            extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden"],
            library_dirs=[_cuda_lib_dir(home)],
            libraries=["cudart_static", "dl", "rt", "pthread"],
            # the static CUDA runtime stays private: torch's own runtime is in the same process
            extra_link_args=["-Wl,--exclude-libs,ALL"],
            language="c++",
        )
        cuda.nvcc = nvcc
        extensions.append(cuda)
    return extensions


setup(
    packages=find_packages(include=["ugcn_fast", "ugcn_fast.*"]) + ["ugcn_fast.kernels"],
    package_dir={"ugcn_fast.kernels": "kernels"},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtWithNvcc},
)

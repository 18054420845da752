"""The CUDA kernel source compiles for the device, with both compilers its launchers use.

pycuda compiles ``projector.cu`` with nvcc, CuPy with NVRTC, and each sees errors the other and the
host shim do not. Neither needs a GPU to compile: nvcc is checked when it is on PATH (PTX for the
oldest supported architecture, and machine code for Hopper with the register report: the per-material
sums must stay in registers, no local-memory stack); NVRTC is checked through CuPy's own program
class with the options ``cupy.RawModule`` adds when CuPy is importable, else through libnvrtc with
ctypes (the ``nvidia-cuda-nvrtc`` wheel of the test extras, or a CUDA toolkit).
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from DeepDRRSlicerLib.cuda.source import KERNEL_FILE, KERNEL_NAME, defines, kernel_source

VARIANTS = [(3, True), (3, False), (1, True), (16, True), (5, False)]
# options cupy.RawModule passes to NVRTC (cupy/cuda/compiler.py), besides -arch
CUPY_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").exists():
            return str(Path(root, "bin", "nvcc"))
    return None


@pytest.fixture(scope="module")
def nvcc():
    path = _nvcc()
    if path is None:
        pytest.skip("nvcc is not installed (no CUDA toolkit on PATH, CUDA_PATH or /usr/local/cuda): "
                    "the device-compile check with nvcc needs it")
    return path


@pytest.mark.parametrize("n_materials, labels", VARIANTS)
def test_nvcc_compiles_every_variant_to_ptx(nvcc, tmp_path, n_materials, labels):
    ptx = tmp_path / "projector.ptx"
    result = subprocess.run([nvcc, "--ptx", "-arch=compute_75", "-Werror=all-warnings", *defines(n_materials, labels),
                             "-o", str(ptx), str(KERNEL_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    # an unmangled entry point: what SourceModule(no_extern_c=True) and RawModule look up by name
    assert re.search(rf"\.entry\s+{KERNEL_NAME}\s*\(", text), "kernel entry point missing or mangled"
    assert ".local" not in text, "the kernel uses local memory (the accumulators left the registers)"


@pytest.mark.parametrize("labels", [True, False])
def test_hopper_machine_code_keeps_the_sums_in_registers(nvcc, tmp_path, labels):
    result = subprocess.run([nvcc, "-cubin", "-arch=sm_90", "-Xptxas", "-v", *defines(3, labels), "-o",
                             str(tmp_path / "projector.cubin"), str(KERNEL_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = result.stderr
    assert "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" in report, report
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    assert registers <= 128, f"{registers} registers per thread would halve the threads per multiprocessor"


# ------------------------------------------------------------------------------------------ NVRTC

def _libnvrtc():
    """ctypes handle of libnvrtc from a CUDA toolkit or the nvidia-cuda-nvrtc wheel, or None."""
    candidates = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    for entry in sys.path:
        for pattern in ("nvidia/cu*/lib/libnvrtc.so.*", "nvidia/cuda_nvrtc/lib/libnvrtc.so.*"):
            candidates += sorted(p for p in glob.glob(os.path.join(entry, pattern)) if ".alt." not in p)
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    for name in candidates:
        try:
            # NVRTC loads its builtins library by name: load it first from the same folder
            for builtins in sorted(glob.glob(os.path.join(os.path.dirname(name), "libnvrtc-builtins.so.*"))):
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _compile_with_libnvrtc(library, source: str, options) -> bytes:
    program = ctypes.c_void_p()
    check = _checker(library)
    check(library.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"projector.cu", 0, None, None))
    try:
        encoded = [o.encode() for o in options]
        result = library.nvrtcCompileProgram(program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded))
        size = ctypes.c_size_t()
        check(library.nvrtcGetProgramLogSize(program, ctypes.byref(size)))
        log = ctypes.create_string_buffer(size.value)
        check(library.nvrtcGetProgramLog(program, log))
        assert result == 0, f"NVRTC failed ({result}):\n{log.value.decode(errors='replace')}"
        assert "warning" not in log.value.decode(errors="replace"), log.value.decode(errors="replace")
        check(library.nvrtcGetPTXSize(program, ctypes.byref(size)))
        ptx = ctypes.create_string_buffer(size.value)
        check(library.nvrtcGetPTX(program, ptx))
        return ptx.value
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


def _checker(library):
    library.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(code):
        assert code == 0, library.nvrtcGetErrorString(code).decode()

    return check


@pytest.fixture(scope="module")
def nvrtc():
    """A function (source, options) -> PTX text, and the name of the route it takes."""
    try:
        from cupy.cuda import compiler

        def through_cupy(source, options):
            program = compiler._NVRTCProgram(source, "projector.cu", (), (), name_expressions=None, method="ptx")
            ptx, _ = program.compile(tuple(options))
            return ptx.encode() if isinstance(ptx, str) else ptx

        compiler._get_nvrtc_version()   # raises when CuPy finds no NVRTC
        return through_cupy, "cupy"
    except ImportError:
        pass
    except Exception as error:  # noqa: BLE001 - CuPy reports a missing NVRTC in several ways
        pytest.skip(f"CuPy is installed but finds no NVRTC ({type(error).__name__}: {error})")
    library = _libnvrtc()
    if library is None:
        pytest.skip("no NVRTC: neither CuPy nor libnvrtc (CUDA toolkit or the nvidia-cuda-nvrtc wheel of the "
                    "test extras) is installed")
    return (lambda source, options: _compile_with_libnvrtc(library, source, options)), "libnvrtc"


@pytest.mark.parametrize("n_materials, labels", VARIANTS)
@pytest.mark.parametrize("arch", ["compute_75", "compute_90"])
def test_nvrtc_compiles_every_variant_with_cupys_options(nvrtc, n_materials, labels, arch):
    compile_ptx, _ = nvrtc
    ptx = compile_ptx(kernel_source(), [*defines(n_materials, labels), *CUPY_OPTIONS, f"-arch={arch}"])
    text = ptx.decode(errors="replace") if isinstance(ptx, bytes) else ptx
    assert re.search(rf"\.entry\s+{KERNEL_NAME}\s*\(", text)
    assert ".local" not in text or n_materials > 3


def test_nvrtc_rejects_a_broken_source(nvrtc):
    """The check can fail: a source with an undeclared name does not compile."""
    compile_ptx, _ = nvrtc
    broken = kernel_source().replace("drr_add(acc, b00 & s.label_mask", "drr_add(acc, b00 & label_maks", 1)
    assert broken != kernel_source()
    with pytest.raises(Exception):
        compile_ptx(broken, [*defines(3, True), *CUPY_OPTIONS, "-arch=compute_75"])


# ------------------------------------------------------------------------------ scatter Monte Carlo

def _transport_source() -> str:
    from DeepDRRSlicerLib.scatter.kernel_cuda import kernel_source as transport_source

    return transport_source()


@pytest.mark.parametrize("arch", ["compute_75", "compute_90"])
def test_nvrtc_compiles_the_scatter_transport_with_cupys_options(nvrtc, arch):
    from DeepDRRSlicerLib.scatter.kernel_cuda import KERNEL_NAME as TRANSPORT

    compile_ptx, _ = nvrtc
    ptx = compile_ptx(_transport_source(), [*CUPY_OPTIONS, f"-arch={arch}"])
    text = ptx.decode(errors="replace") if isinstance(ptx, bytes) else ptx
    assert re.search(rf"\.entry\s+{TRANSPORT}\s*\(", text), "transport kernel entry point missing or mangled"
    assert "atom.global.add.u64" in text, "the integer tallies are not added atomically"


def test_nvcc_compiles_the_scatter_transport_to_ptx(nvcc, tmp_path):
    from DeepDRRSlicerLib.scatter.kernel_cuda import KERNEL_NAME as TRANSPORT, SOURCE_FILE

    ptx = tmp_path / "transport.ptx"
    result = subprocess.run([nvcc, "--ptx", "-arch=compute_75", "-Werror=all-warnings", "-o", str(ptx),
                             str(SOURCE_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"\.entry\s+{TRANSPORT}\s*\(", ptx.read_text())

#!/usr/bin/env python3
"""Compiles cram's CUDA kernels with NVRTC on a machine without a GPU.

NVRTC needs no device to compile, so a kernel change can be compiled for the
GPU architectures here, before any device time is spent, with the options
the backend uses (src/backend/cuda/kernels.rs). It only compiles: whether the
kernels are right is cuda_ops' work on the GPU. NVRTC comes from PyPI:

    pip install nvidia-cuda-nvrtc        # CUDA 13 (or nvidia-cuda-nvrtc-cu12)
    python3 scripts/nvrtc_check.py [--registers] [--sass KERNEL] [sm_90 sm_80 ...]

--registers prints each kernel's registers, stack and spills as ptxas reports
them (registers per thread bound how many blocks share an SM).

--sass KERNEL prints the kernel's machine code for the first architecture and
a count of its instructions by opcode (needs cuobjdump: pip install
nvidia-cuda-cuobjdump), to see what a loop costs without a GPU.

Exits non-zero, with NVRTC's log, when any architecture fails.
"""
import ctypes
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_nvrtc():
    try:
        import nvidia  # the PyPI packages' namespace
    except ImportError:
        sys.exit("no NVRTC: pip install nvidia-cuda-nvrtc (or nvidia-cuda-nvrtc-cu12)")
    for base in nvidia.__path__:
        for pattern in ("cu13/lib/libnvrtc.so.*", "cuda_nvrtc/lib/libnvrtc.so.*"):
            found = sorted(glob.glob(os.path.join(base, pattern)))
            if found:
                return ctypes.CDLL(found[-1])
    sys.exit("the nvidia package has no libnvrtc: pip install nvidia-cuda-nvrtc")


def program_source():
    kernels_rs = open(os.path.join(ROOT, "src/backend/cuda/kernels.rs")).read()
    files = re.findall(r'include_str!\("kernels/([^"]+)"\)', kernels_rs)
    block = kernels_rs.split("let options = [", 1)[1].split("];", 1)[0]
    # The fixed options; the architecture (a format! of {arch}) is given per call.
    options = [o for o in re.findall(r'"(-[^"]*)"', block) if "{" not in o]
    text = "\n".join(open(os.path.join(ROOT, "src/backend/cuda/kernels", f)).read() for f in files)
    return files, options, text


def compile_for(nvrtc, text, arch, options, cubin_to=None):
    prog = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), text.encode(), b"cram.cu", 0, None, None) != 0:
        sys.exit("nvrtcCreateProgram failed")
    opts = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in options]
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if cubin_to and rc == 0:
        nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        with open(cubin_to, "wb") as f:
            f.write(cubin.raw)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace").strip()


def register_table(log):
    """ptxas -v's lines, one row per kernel: name, registers, stack, spills."""
    rows, name = [], None
    for line in log.splitlines():
        entry = re.search(r"Compiling entry function '(\w+)'", line)
        if entry:
            name = entry.group(1)
            stack = spills = ""
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if frame and name:
            stack, spills = frame.group(1), f"{frame.group(2)}/{frame.group(3)}"
        used = re.search(r"Used (\d+) registers", line)
        if used and name:
            rows.append(f"  {name:<44} {used.group(1):>4} registers, stack {stack} B, spill stores/loads {spills} B")
            name = None
    return "\n".join(rows)


def find_tool(name):
    import nvidia

    for base in nvidia.__path__:
        for pattern in (f"cu13/bin/{name}", f"cuda_*/bin/{name}"):
            found = sorted(glob.glob(os.path.join(base, pattern)))
            if found:
                return found[-1]
    sys.exit(f"no {name}: pip install nvidia-cuda-{name}")


def print_sass(cubin, kernel):
    """The kernel's SASS, then its instructions counted by opcode (static counts:
    an unrolled loop body shows what one trip costs)."""
    import subprocess
    from collections import Counter

    sass = subprocess.run([find_tool("cuobjdump"), "-sass", "-fun", kernel, cubin],
                          capture_output=True, text=True, check=True).stdout
    print(sass)
    ops = Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m:
            ops[m.group(1).split(".")[0]] += 1
    print(f"{sum(ops.values())} instructions:", ", ".join(f"{op} {n}" for op, n in ops.most_common()))


def main():
    args = sys.argv[1:]
    registers = "--registers" in args
    sass_kernel = None
    if "--sass" in args:
        i = args.index("--sass")
        sass_kernel = args[i + 1]
        del args[i : i + 2]
    archs = [a for a in args if a != "--registers"] or ["sm_90", "sm_80"]
    nvrtc = find_nvrtc()
    files, options, text = program_source()
    print(f"{len(files)} sources ({', '.join(files)}), options {' '.join(options)}")
    failed = False
    for arch in archs:
        cubin = f"/tmp/cram-{arch}.cubin" if sass_kernel and arch == archs[0] else None
        rc, log = compile_for(nvrtc, text, arch, options + (["--ptxas-options=-v"] if registers else []), cubin)
        print(f"{arch}: {'ok' if rc == 0 else f'FAILED (nvrtc {rc})'}")
        if cubin and rc == 0:
            print_sass(cubin, sass_kernel)
        if registers and rc == 0:
            print(register_table(log))
        elif log:
            print(log)
        failed |= rc != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

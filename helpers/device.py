"""Where the code runs and in which precision: the device a run uses, whether it computes bf16
natively (``precision="auto"`` resolves to bf16 only there), what is recorded about the machine with
every run, and the three-line setup banner that opens each notebook."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def pick_device(device: str | None = None) -> torch.device:
    """The given device, else cuda, then mps, then cpu."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated, slowly."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether a CUDA GPU computes bf16 natively: compute capability 8.0 (Ampere) or later."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` as a run on ``device`` computes it: "auto" is bf16 where the device computes it natively."""
    if precision != "auto":
        return precision
    if device.type == "cuda":   # native bf16 from Ampere (compute capability 8.0) on; is_bf16_supported
        return "bf16" if cuda_has_native_bf16(device) else "fp32"   # also counts emulation (a T4, say)
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def runnable_precision(precision: str, device: torch.device) -> str:
    """The precision to re-evaluate a run trained in ``precision`` with on ``device``: the same where the
    device computes it natively, else fp32 (bf16 emulated on an older CPU or GPU is only slower)."""
    return precision if resolve_precision("auto", device) == precision else "fp32"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """What a reader needs to trust a run: versions, device, threads, the CPU's model, whether it computes
    bf16 natively and its cores. (Nothing that changes between two runs on one machine: a resumed run must end
    with the same files as an uninterrupted one.)"""
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "native_bf16": cpu_has_native_bf16(), "cores": os.cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_setup(parameters: dict, data=None, device: str | None = None) -> None:
    """What a reader needs to trust a notebook, in three lines: software and machine, data, parameters."""
    dev = pick_device(device)
    env = environment(dev)
    where = env.get("gpu", env["cpu"])
    precision = parameters.get("precision")
    computes = f", precision {precision} -> {resolve_precision(precision, dev)}" if precision else ""
    print(f"torch {env['torch']}, Python {env['python']}; {dev} ({where}), {env['threads']} threads{computes}")
    if data is not None:
        print(f"data: {data.source}" + ("" if data.official else " (README: Data)"))
    print("parameters: " + ", ".join(f"{k}={v!r}" for k, v in parameters.items()))

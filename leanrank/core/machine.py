"""Machine and version facts recorded with every result file."""

from __future__ import annotations

import importlib.metadata
import os
import platform


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_features": cpu_features(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
               "amx_bf16")


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The CPU flags that decide int8/bf16 kernel speed (VNNI, AVX-512 BF16/FP16, AMX), from
    /proc/cpuinfo; empty where it cannot be read."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpuinfo = fh.read()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in SPEED_FLAGS if f in flags]


def versions(packages: tuple[str, ...] = (
    "leanrank", "torch", "transformers", "tokenizers", "bm25s", "faiss-cpu", "numpy", "ranx", "onnx",
    "onnxruntime", "onnxscript",
)) -> dict:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

"""Peak memory growth of this process over a stretch of code, the way a user would measure it.

On CUDA: the caching allocator's peak (`torch.cuda.max_memory_allocated`) over what was
allocated before. On the CPU: the kernel's resident-set high-water mark (`VmHWM`, reset at the
start through `/proc/self/clear_refs`) over the resident set before, after handing freed heap
memory back to the system, so that earlier garbage cannot hide new allocations.
Depends on torch and the standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from types import TracebackType

import torch


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _trim_heap() -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def resident_bytes() -> int:
    """This process's resident set now."""
    return _status_kib("VmRSS") * 1024


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.growth_bytes`: the most memory the
    block held at once beyond what the process held when it began (None where this system
    cannot tell)."""

    def __init__(self, device: torch.device, baseline_bytes: int | None = None) -> None:
        self.device = device
        self.baseline_bytes = baseline_bytes
        self.growth_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            if self.baseline_bytes is None:
                self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            return self
        _trim_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            if self.baseline_bytes is None:
                self.baseline_bytes = resident_bytes()
        except OSError:
            self.baseline_bytes = None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.baseline_bytes is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kib("VmHWM") * 1024
        self.growth_bytes = max(0, peak - self.baseline_bytes)

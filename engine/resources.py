"""What the run's device is doing, as a user thinks of it: the GPU's name, utilisation and memory (NVIDIA's NVML
when ``nvidia-ml-py`` is installed, else what torch knows), or the run process's CPU % and resident memory.

Read in the run's process; the workbench shows the readings (``DeviceUsage`` events) in the Train header.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from engine.events import DeviceUsage

if TYPE_CHECKING:
    import torch

log = logging.getLogger("tunebench.resources")

#: Seconds between two readings while a run trains.
READ_EVERY_SECONDS = 2.0
MIB = 2**20


def _nvml_handle(index: int) -> Any:
    """NVML's handle for torch's CUDA device ``index`` (matched by UUID, as CUDA_VISIBLE_DEVICES may renumber
    them), or None without NVML."""
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        import torch

        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", ""))
        if uuid:
            with contextlib.suppress(pynvml.NVMLError):
                return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:  # no driver, no permission: the torch figures stand in
        log.debug("NVML unavailable: %s", exc)
        return None


def _rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc), else its peak."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    try:
        import resource  # Unix only
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class DeviceProbe:
    """Readings of one device: ``read()`` at most every ``READ_EVERY_SECONDS`` through ``due()``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.index = device.index or 0
        self._nvml = _nvml_handle(self.index) if self.cuda else None
        self._last_read = 0.0
        self._cpu = (time.monotonic(), time.process_time())

    def due(self) -> bool:
        return time.monotonic() - self._last_read >= READ_EVERY_SECONDS

    def read(self) -> DeviceUsage:
        self._last_read = time.monotonic()
        if self.cuda:
            return self._read_gpu()
        if self.device.type == "mps":
            import torch

            return DeviceUsage(
                device="Apple GPU (mps)",
                utilization_percent=None,
                memory_used_mb=torch.mps.current_allocated_memory() / MIB,
            )
        wall, cpu = time.monotonic(), time.process_time()
        busy = (cpu - self._cpu[1]) / max(wall - self._cpu[0], 1e-9) * 100
        self._cpu = (wall, cpu)
        total = _physical_memory()
        return DeviceUsage(
            device="CPU",
            utilization_percent=busy,
            memory_used_mb=_rss_bytes() / MIB,
            memory_total_mb=None if total is None else total / MIB,
        )

    def _read_gpu(self) -> DeviceUsage:
        import torch

        if self._nvml is not None:
            try:
                import pynvml

                memory = pynvml.nvmlDeviceGetMemoryInfo(self._nvml)
                name = pynvml.nvmlDeviceGetName(self._nvml)
                return DeviceUsage(
                    device=name.decode() if isinstance(name, bytes) else str(name),
                    utilization_percent=float(pynvml.nvmlDeviceGetUtilizationRates(self._nvml).gpu),
                    memory_used_mb=memory.used / MIB,
                    memory_total_mb=memory.total / MIB,
                )
            except Exception as exc:
                log.debug("NVML reading failed, using torch's: %s", exc)
                self._nvml = None
        free, total = torch.cuda.mem_get_info(self.index)
        return DeviceUsage(
            device=torch.cuda.get_device_name(self.index),
            utilization_percent=None,
            memory_used_mb=(total - free) / MIB,
            memory_total_mb=total / MIB,
        )


def peak_memory_mb() -> float:
    """The most memory this process's run held: on the GPU when torch used CUDA, else resident memory."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / MIB
    return peak_rss_bytes() / MIB

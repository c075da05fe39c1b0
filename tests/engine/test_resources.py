"""Device readings: the run process's CPU and memory, a GPU through NVML or, without it, through torch."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import resources
from engine.events import DeviceUsage, Event
from engine.resources import DeviceProbe, peak_memory_mb
from engine.runner import Runner
from engine.runs import read_events


def test_cpu_readings_are_the_processs_busy_share_and_resident_memory() -> None:
    probe = DeviceProbe(torch.device("cpu"))
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # keep one core busy
        pass
    usage = probe.read()
    assert usage.device == "CPU"
    # busy for all of it, less whatever else this shared machine ran meanwhile
    assert usage.utilization_percent is not None and 10 <= usage.utilization_percent <= 100 * 64
    assert usage.memory_total_mb is not None and 0 < usage.memory_used_mb < usage.memory_total_mb
    assert not probe.due()  # the next reading waits READ_EVERY_SECONDS
    assert peak_memory_mb() >= usage.memory_used_mb * 0.5


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda as a CPU machine cannot give it: one 16 GiB card with 4 GiB in use."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (12 * 2**30, 16 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: types.SimpleNamespace(uuid="abc"))


def test_without_nvml_a_gpu_reads_from_torch_without_error(monkeypatch: pytest.MonkeyPatch, fake_cuda: None) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    usage = DeviceProbe(torch.device("cuda", 0)).read()
    assert usage == DeviceUsage(
        device="Test GPU", utilization_percent=None, memory_used_mb=4096.0, memory_total_mb=16384.0, time=usage.time
    )


def test_with_nvml_a_gpu_shows_its_name_utilisation_and_memory(
    monkeypatch: pytest.MonkeyPatch, fake_cuda: None
) -> None:
    asked: list[str] = []
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = RuntimeError  # type: ignore[attr-defined]
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByUUID = lambda uuid: asked.append(uuid) or "handle"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=6 * 2**30, total=80 * 2**30)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    usage = DeviceProbe(torch.device("cuda", 0)).read()
    assert asked == ["GPU-abc"]  # found by UUID: CUDA_VISIBLE_DEVICES may renumber the cards
    assert (usage.device, usage.utilization_percent, usage.memory_used_mb, usage.memory_total_mb) == (
        "NVIDIA H100",
        87.0,
        6144.0,
        81920.0,
    )


def test_a_run_reports_its_device_live_and_its_peak_memory_in_the_summary(make_config: Any) -> None:
    events: list[Event] = []
    result = Runner(make_config(), subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    usages = [e for e in events if isinstance(e, DeviceUsage)]
    assert usages and usages[0].device == "CPU"
    assert not [e for e in read_events(Path(result.run_dir) / "events.jsonl") if isinstance(e, DeviceUsage)]
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    assert summary["peak_memory_mb"] >= max(u.memory_used_mb for u in usages) * 0.99


def test_readings_come_every_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(resources.time, "monotonic", lambda: now[0])
    probe = DeviceProbe(torch.device("cpu"))
    assert probe.due()
    probe.read()
    now[0] += resources.READ_EVERY_SECONDS - 0.1
    assert not probe.due()
    now[0] += 0.2
    assert probe.due()

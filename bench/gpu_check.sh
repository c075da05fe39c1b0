#!/usr/bin/env bash
# GPU checks for a lent CUDA machine, in one go (about 3-5 minutes): the device readout (NVML through
# nvidia-ml-py, then without it), a short bf16 run of the loop engine on the bundled reviews, whose
# summary must say finished with a GPU peak memory, the same run with LoRA and gradient checkpointing, and a
# QLoRA run (4-bit base) where bitsandbytes installs. Prints PASS or FAIL per check; exits 1 on any FAIL.
#
#   bash bench/gpu_check.sh        # from the repository root, with the project installed
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
fail=0
check() { if "$@"; then echo "PASS $CHECK"; else echo "FAIL $CHECK"; fail=1; fi; }

$PY -m pip install -q 'nvidia-ml-py>=12' >/dev/null 2>&1 || echo "note: nvidia-ml-py did not install; NVML checks fall back"

CHECK="device readout with NVML"
check $PY - <<'PY'
import torch
from engine.resources import DeviceProbe
assert torch.cuda.is_available(), "no CUDA device"
usage = DeviceProbe(torch.device("cuda", 0)).read()
print(usage)
assert usage.device != "CPU" and usage.memory_total_mb and usage.memory_used_mb >= 0
try:
    import pynvml  # noqa: F401
    assert usage.utilization_percent is not None, "NVML is installed but gave no utilisation"
except ImportError:
    print("nvidia-ml-py missing: utilisation is unknown, as designed")
PY

CHECK="device readout without NVML (torch's figures, no error)"
check $PY - <<'PY'
import sys
sys.modules["pynvml"] = None
import torch
from engine.resources import DeviceProbe
usage = DeviceProbe(torch.device("cuda", 0)).read()
print(usage)
assert usage.utilization_percent is None and usage.memory_total_mb
PY

CHECK="bf16 loop run on the GPU"
check $PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from engine.config import load_config
from engine.events import DeviceUsage
from engine.runner import Runner
cfg = load_config("sample_configs/quickstart-classify.yaml", [
    "train.precision=bf16", "train.device=cuda", "train.num_train_epochs=1", "data.train_size=256",
    f"output.runs_dir={sys.argv[1]}",
])
seen = []
result = Runner(cfg, subscribers=[seen.append]).run()
assert result.status == "finished", result.error
summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
usages = [e for e in seen if isinstance(e, DeviceUsage)]
print(summary["precision"], summary["device"], summary["peak_memory_mb"], usages[-1] if usages else None)
assert summary["precision"] == "bf16" and summary["device"].startswith("cuda")
assert summary["peak_memory_mb"] > 0 and usages and usages[-1].device != "CPU"
PY

CHECK="LoRA with gradient checkpointing on the GPU (bf16), and its adapter predicting"
check $PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from engine.config import load_config
from engine.events import RunStarted
from engine.predict import load_predictor
from engine.runner import Runner
cfg = load_config("sample_configs/quickstart-classify.yaml", [
    "train.precision=bf16", "train.device=cuda", "train.num_train_epochs=1", "data.train_size=256",
    "model.lora.r=8", "train.gradient_checkpointing=true", f"output.runs_dir={sys.argv[1]}",
])
seen = []
result = Runner(cfg, subscribers=[seen.append]).run()
assert result.status == "finished", result.error
started = next(e for e in seen if isinstance(e, RunStarted))
summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
print(started.parameters_text, summary["peak_memory_mb"], summary["final_metrics"])
assert started.adapter == "LoRA r=8" and (Path(result.run_dir) / "model" / "adapter_config.json").is_file()
prediction = load_predictor(str(result.run_dir), device="cuda").predict("The staff were lovely and the food was great.")
print(prediction.description, prediction.labels[:2])
assert prediction.description == "adapter on minilm"
PY

if $PY -c "import bitsandbytes" >/dev/null 2>&1 || $PY -m pip install -q bitsandbytes >/dev/null 2>&1; then
CHECK="QLoRA: a 4-bit base (bitsandbytes) with LoRA adapters on the GPU"
check $PY - "$OUT" <<'PY'
import sys
from engine.config import load_config
from engine.events import RunStarted
from engine.runner import Runner
cfg = load_config("sample_configs/quickstart-classify.yaml", [
    "train.precision=bf16", "train.device=cuda", "train.num_train_epochs=1", "data.train_size=256",
    "model.lora.r=8", "model.load_in_4bit=true", f"output.runs_dir={sys.argv[1]}",
])
seen = []
result = Runner(cfg, subscribers=[seen.append]).run()
assert result.status == "finished", result.error
started = next(e for e in seen if isinstance(e, RunStarted))
print(started.parameters_text, result.metrics)
assert started.adapter == "QLoRA r=8"
PY
else
    echo "note: bitsandbytes did not install; QLoRA (model.load_in_4bit) is not checked"
fi

exit $fail

"""What `training.compile: auto` and `training.bf16: auto` do on a device.

On the CPU neither pays (a compiled step measured 0.7x an eager one; CPU autocast to bf16 is
not used). On CUDA both are on by default, unless the GPU is in MEASURED: there its entry,
recorded by `benchmarks/gpu_pipeline.sh bench` (its `auto_settings.json`: eager against
compiled and fp32 against bf16 for grid jobs, compile time included), decides. A GPU where one
of them did not pay gets `false` there, so that "auto" avoids it.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# GPU name (torch.cuda.get_device_name()) -> {"compile": bool, "bf16": bool, "source": str}.
# Only measured entries go here: copy them from auto_settings.json of a gpu_pipeline.sh run.
MEASURED: dict[str, dict] = {}

SETTINGS = ("auto", "always", "never")


def gpu_name(device: torch.device) -> str:
    """The GPU's name as MEASURED keys it (the device itself where CUDA is not there)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return str(device)


def measured_choice(device: torch.device, what: str, measured: dict | None = None):
    """The recorded choice ("compile" or "bf16") for this device's GPU, or None if unmeasured."""
    table = MEASURED if measured is None else measured
    if device.type != "cuda" or not table:
        return None
    entry = table.get(gpu_name(device))
    return None if entry is None else bool(entry[what])


def use(setting: str, what: str, device: torch.device, measured: dict | None = None) -> bool:
    """Whether to use `what` ("compile" or "bf16") under `setting` ("auto", "always", "never")."""
    if setting not in SETTINGS:
        raise ValueError(f"training.{what} is one of {', '.join(SETTINGS)}, not {setting!r}")
    if setting != "auto":
        return setting == "always"
    if device.type != "cuda":
        return False
    choice = measured_choice(device, what, measured)
    if choice is None:
        log.info(
            "%s: no measurement for %s in vitct.accelerator.MEASURED, so on by default "
            "(benchmarks/gpu_pipeline.sh bench measures whether it pays)",
            what,
            gpu_name(device),
        )
        return True
    log.info("%s %s on %s, as measured", what, "on" if choice else "off", device)
    return choice

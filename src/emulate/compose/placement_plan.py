"""Planning a device map without loading anything: the model built on the meta device.

`emulate placement CONFIG --max-memory 0:80GiB,1:80GiB,2:80GiB,3:80GiB --dtype bfloat16`
answers "does Llama-2-70B fit on these GPUs, and how is it split?" from its config.json alone:
no weight is materialised, so it runs anywhere in seconds. The map is Accelerate's, the same one
`from_pretrained(device_map=..., max_memory=...)` computes when the model is loaded for real.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from emulate.common.errors import PlacementError
from emulate.compose.placement import MAP_STRATEGIES, memory_budget, torch_dtype


@dataclass
class Plan:
    device_map: dict[str, object]
    bytes_per_device: dict[object, int]
    total_bytes: int
    budget: dict[object, int]
    parameters: int

    @property
    def fits(self) -> bool:
        """Everything on the accelerators: nothing offloaded to the CPU or disk."""
        return all(device not in ("cpu", "disk") for device in self.device_map.values())


def plan_device_map(config_path: str | Path, max_memory: dict, dtype="bfloat16",
                    strategy: str = "balanced") -> Plan:
    """Accelerate's device map for the model `config_path` describes (a config.json or the
    folder holding one), with `max_memory` per device ({0: "80GiB", ..., "cpu": ...})."""
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import compute_module_sizes, get_balanced_memory
    from transformers import AutoConfig, AutoModelForCausalLM

    if strategy not in MAP_STRATEGIES:
        raise PlacementError(f"strategy {strategy!r} is not one of {', '.join(MAP_STRATEGIES)}")
    dtype = torch_dtype(dtype)
    budget = memory_budget(max_memory, "max_memory", check_devices=False)
    path = Path(config_path)
    folder = path.parent if path.is_file() else path
    if path.exists() and not (folder / "config.json").is_file():
        raise PlacementError(f"{str(folder)!r} holds no config.json; give a model's config.json "
                             "or the checkpoint folder that holds it")
    try:  # a path that does not exist may still be a hub id in the local cache
        config = AutoConfig.from_pretrained(folder if path.exists() else str(config_path))
    except (OSError, ValueError) as exc:
        if not path.exists():
            raise PlacementError(f"{str(path)!r}: no such file or folder, nor a model id in the "
                                 "hub cache; give a model's config.json or the checkpoint folder "
                                 "that holds it") from None
        raise PlacementError(f"cannot read a model config at {str(path)!r}: {exc}") from None
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    blocks = _repeated_block(model)
    with warnings.catch_warnings(), _quiet("accelerate"):
        warnings.simplefilter("ignore")
        if strategy in ("balanced", "balanced_low_0", "auto"):
            budget_used = get_balanced_memory(model, max_memory=budget, dtype=dtype,
                                              no_split_module_classes=blocks,
                                              low_zero=strategy == "balanced_low_0")
        else:
            budget_used = budget
        device_map = infer_auto_device_map(model, max_memory=budget_used, dtype=dtype,
                                           no_split_module_classes=blocks)
    sizes = compute_module_sizes(model, dtype=dtype)
    per_device: dict[object, int] = {}
    for module, device in device_map.items():
        per_device[device] = per_device.get(device, 0) + sizes[module]
    return Plan(device_map, per_device, sizes[""], budget,
                sum(p.numel() for p in model.parameters()))


def _repeated_block(model) -> list[str]:
    """The class of the model's repeated block (its longest ModuleList): kept whole on one
    device, as residual connections inside a block would otherwise cross devices."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    return [type(max(lists, key=len)[0]).__name__] if lists else []


class _quiet:
    """Silence a library logger for a block (Accelerate warns that planned GPUs are absent)."""

    def __init__(self, name: str):
        self.logger = logging.getLogger(name)

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"

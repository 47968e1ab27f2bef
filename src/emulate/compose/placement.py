"""Where a model's weights live: one device, or an Accelerate device map across several.

    Placement(device="cuda:1")                                    # the whole model on one GPU
    Placement(device_map="auto", max_memory={0: "70GiB", 1: "70GiB", "cpu": "200GiB"},
              offload_folder="/scratch/offload", dtype="bfloat16")  # split, spill to CPU/disk

A composition gives each model its own placement (a 70B base split over GPUs, the 7B pair on
one). Checkpoints load straight to their devices through `from_pretrained(device_map=...)`, so
no model is staged whole in CPU memory; layers mapped to "disk" are read from the checkpoint
(or the offload folder) at each forward. Every term's logits are brought to the composition's
device, where they are combined. Bad devices, maps and budgets are refused before loading.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from emulate.common.errors import PlacementError

MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    """One model's device (or device map), memory budget per device, offload folder, dtype."""

    device: str | None = None
    device_map: str | Mapping | None = None
    max_memory: Mapping | None = None
    offload_folder: str | None = None
    dtype: str | None = None

    @property
    def mapped(self) -> bool:
        return self.device_map is not None


def placement(value, name: str, device=None, dtype=None, here: bool = True) -> Placement:
    """A model's placement from None, "cuda:1", "auto" (a map strategy), a mapping of Placement
    fields, or a Placement; `device` and `dtype` are the composition's defaults. `here=False`
    checks the form only, not that the devices exist on this machine (a config file)."""
    if value is None:
        value = Placement()
    elif isinstance(value, str):
        value = Placement(device_map=value) if value in MAP_STRATEGIES else Placement(device=value)
    elif isinstance(value, Mapping):
        unknown = set(value) - set(Placement.__dataclass_fields__)
        if unknown:
            raise PlacementError(
                f"placement of {name!r}: unknown key(s) {sorted(map(str, unknown))}; use device, "
                "device_map, max_memory, offload_folder, dtype")
        value = Placement(**value)
    elif not isinstance(value, Placement):
        raise PlacementError(
            f"placement of {name!r} must be a device ('cuda:1'), a map strategy ('auto'), a "
            f"mapping of placement fields or a Placement, got {type(value).__name__}")
    if value.device is not None and value.device_map is not None:
        raise PlacementError(f"placement of {name!r}: give a device or a device_map, not both")
    if value.device is None and value.device_map is None:
        value = Placement(str(device or "cpu"), None, value.max_memory, value.offload_folder,
                          value.dtype)
    if value.dtype is None and dtype is not None:
        value = Placement(value.device, value.device_map, value.max_memory,
                          value.offload_folder, dtype)
    check(value, name, here)
    return value


def check(p: Placement, name: str, here: bool = True) -> None:
    """Refuse what cannot place a model, naming the model and the fix."""
    where = f"placement of {name!r}"
    if p.device is not None:
        check_device(p.device, f"{where}: device", here=here)
    if p.dtype is not None:
        torch_dtype(p.dtype, where)
    if (p.max_memory is not None or p.offload_folder is not None) and not p.mapped:
        raise PlacementError(f"{where}: max_memory and offload_folder need a device_map "
                             "(e.g. 'auto')")
    if p.offload_folder is not None and not isinstance(p.offload_folder, str):
        raise PlacementError(f"{where}: offload_folder must be a folder path")
    if isinstance(p.device_map, str):
        if p.device_map not in MAP_STRATEGIES:
            raise PlacementError(f"{where}: device_map {p.device_map!r} is not one of "
                                 f"{', '.join(MAP_STRATEGIES)} or a mapping module -> device")
    elif isinstance(p.device_map, Mapping):
        if not p.device_map:
            raise PlacementError(f"{where}: the device_map is empty")
        for module, device in p.device_map.items():
            if not isinstance(module, str):
                raise PlacementError(f"{where}: device_map keys must be module names")
            check_device(device, f"{where}: device_map[{module!r}]", disk=True, here=here)
    elif p.device_map is not None:
        raise PlacementError(f"{where}: device_map must be a strategy name or a mapping")
    if p.max_memory is not None:
        memory_budget(p.max_memory, where, here)


def check_device(device, where: str, disk: bool = False,
                 here: bool = True) -> torch.device | str:
    """A device that exists here: an int (a GPU index), 'cpu', 'cuda:N', 'mps' (and 'disk' in
    device maps)."""
    if disk and device == "disk":
        return device
    if isinstance(device, bool) or not isinstance(device, (str, numbers.Integral, torch.device)):
        raise PlacementError(f"{where} must be a device such as 'cpu' or 'cuda:0', got "
                             f"{type(device).__name__} {device!r:.40}")
    try:
        parsed = torch.device(f"cuda:{device}" if isinstance(device, numbers.Integral)
                              else device)
    except (RuntimeError, ValueError):
        raise PlacementError(f"{where}: {device!r} is not a device; use 'cpu', 'cuda:N' or "
                             "'mps'" + (" (or 'disk')" if disk else "")) from None
    if not here and parsed.type in ("cuda", "mps", "cpu"):
        return parsed
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise PlacementError(f"{where}: {device!r} does not exist here ({count} CUDA "
                                 "device(s) visible); use 'cpu' or an existing GPU")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise PlacementError(f"{where}: 'mps' is not available on this machine")
    elif parsed.type != "cpu":
        raise PlacementError(f"{where}: device type {parsed.type!r} is not supported; use "
                             "'cpu', 'cuda:N' or 'mps'")
    return parsed


def memory_budget(max_memory, where: str, check_devices: bool = True) -> dict:
    """{device: bytes} from {0: "40GiB", "cpu": "100GiB", ...}."""
    from accelerate.utils import convert_file_size_to_int

    if not isinstance(max_memory, Mapping) or not max_memory:
        raise PlacementError(f"{where}: max_memory must be a mapping device -> size, e.g. "
                             "{0: '40GiB', 'cpu': '100GiB'}")
    budget = {}
    for device, size in max_memory.items():
        key = int(device) if isinstance(device, str) and device.isdigit() else device
        if key not in ("cpu", "disk"):
            parsed = check_device(key, f"{where}: max_memory key", here=check_devices)
            if parsed.type != "cuda":
                raise PlacementError(f"{where}: max_memory keys are GPU indices, 'cpu' or "
                                     f"'disk', got {device!r}")
            key = parsed.index or 0
        try:
            budget[key] = convert_file_size_to_int(size)
        except (ValueError, TypeError):
            raise PlacementError(f"{where}: max_memory[{device!r}] = {size!r} is not a size; "
                                 "use bytes or a string like '40GiB' or '500MB'") from None
    return budget


def torch_dtype(dtype, where: str = "dtype") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise PlacementError(f"{where}: unknown dtype {dtype!r}; use {', '.join(DTYPES)}")


def from_pretrained_kwargs(p: Placement) -> dict:
    """What `from_pretrained` needs to load the weights straight to where they belong."""
    kwargs: dict = {"device_map": dict(p.device_map) if isinstance(p.device_map, Mapping)
                    else (p.device_map or p.device)}
    if p.max_memory is not None:
        kwargs["max_memory"] = memory_budget(p.max_memory, "max_memory")
    if p.offload_folder is not None:
        kwargs["offload_folder"] = p.offload_folder
    if p.dtype is not None:
        kwargs["dtype"] = torch_dtype(p.dtype)
    return kwargs


def check_map_modules(model, device_map: Mapping, name: str) -> None:
    """An explicit map must name real modules and cover every parameter."""
    modules = {n for n, _ in model.named_modules()}
    unknown = [k for k in device_map if k and k not in modules]
    if unknown:
        raise PlacementError(f"placement of {name!r}: device_map names no module {unknown[0]!r}"
                             f" (modules include {sorted(modules - {''})[:6]})")
    keys = list(device_map)
    for parameter, _ in model.named_parameters():
        if not any(k == "" or parameter == k or parameter.startswith(k + ".") for k in keys):
            raise PlacementError(f"placement of {name!r}: device_map places no module holding "
                                 f"{parameter!r}; map it (or a module above it)")


def parse_memory(text: str, where: str = "max_memory") -> dict:
    """'0:40GiB,1:40GiB,cpu:100GiB' (or ';'-separated) -> {0: '40GiB', 1: '40GiB', 'cpu': ...}."""
    budget = {}
    for part in str(text).replace(";", ",").split(","):
        device, sep, size = part.partition(":")
        if not sep or not device.strip() or not size.strip():
            raise PlacementError(f"{where} {text!r}: write DEVICE:SIZE pairs, e.g. "
                                 "0:40GiB,1:40GiB,cpu:100GiB")
        device = device.strip()
        budget[int(device) if device.isdigit() else device] = size.strip()
    return budget


def from_options(fields: dict[str, list[str]]) -> tuple[str, str | None, dict[str, dict]]:
    """Command-line placement: {"device": [...], "dtype": [...], "device_map": [...], ...},
    each value `NAME=VALUE` for one model or (device, dtype) a bare default for all.
    Returns (default device, default dtype, placements by model name)."""
    defaults: dict[str, str | None] = {"device": "cpu", "dtype": None}
    placements: dict[str, dict] = {}
    for field, values in fields.items():
        option = "--" + field.replace("_", "-")
        for value in values:
            name, sep, rest = value.partition("=")
            if not sep:
                if field not in defaults:
                    raise PlacementError(f"{option} {value!r}: write NAME={field.upper()}")
                defaults[field] = value
                continue
            if not name.strip() or not rest:
                raise PlacementError(f"{option} {value!r}: write NAME=VALUE")
            if field == "max_memory":
                rest = parse_memory(rest, option)
            placements.setdefault(name.strip(), {})[field] = rest
    return defaults["device"], defaults["dtype"], placements


def input_device(model) -> torch.device:
    """Where a model's input ids go: its embedding's device (a device-mapped model's hooks
    move them on from there); the CPU when the embedding waits on disk."""
    device_map = getattr(model, "hf_device_map", None)
    weight = model.get_input_embeddings().weight
    if weight.device.type != "meta":
        return weight.device
    if device_map:
        for device in device_map.values():
            if device not in ("cpu", "disk"):
                return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return torch.device("cpu")


def describe_request(p: Placement) -> str:
    """A placement in words, for error messages."""
    parts = [f"device_map={p.device_map!r}" if p.mapped else f"device={p.device!r}"]
    if p.max_memory is not None:
        parts.append(f"max_memory={dict(p.max_memory)!r}")
    if p.dtype is not None:
        parts.append(f"dtype={p.dtype}")
    return ", ".join(parts)


def describe(model) -> str:
    """Where a loaded model's weights are, for messages and logs."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        return ", ".join(sorted({str(d) for d in device_map.values()}))
    return str(next(model.parameters()).device)

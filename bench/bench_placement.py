"""Peak CPU memory while loading a checkpoint to a device map, against its size on disk.

A Llama checkpoint of a few hundred MB is loaded through `emulate`'s loader in a fresh process
per placement; the peak resident memory that loading it and running one forward add (peak RSS
after minus before, with torch and transformers already imported; safetensors weights are
mapped lazily, so the forward is what makes a plain load resident) is compared with the
checkpoint's size on disk. Placements: the plain load to the CPU, and device maps with a small
CPU budget so most layers are offloaded to disk (read from the checkpoint at each forward,
never staged whole).
The forward's logits are checked against the plain model's.

Run by hand: `python bench/bench_placement.py [--hidden 768 --layers 12]`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

MB = 2**20


def build(root: Path, hidden: int, layers: int) -> str:
    import torch
    from roofline import tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(8000)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=hidden // 64, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return str(root / "model")


def peak_rss_kb() -> int:
    """The process's peak resident set so far (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(path: str, placement: dict | None, queue) -> None:
    import torch
    import transformers  # noqa: F401 (imported before the baseline)

    from emulate.compose.loading import load_model

    torch.set_num_threads(1)
    before = peak_rss_kb()
    loaded = load_model(path, "model", placement=placement)
    with torch.inference_mode():  # weights are mapped lazily: count what one forward reads too
        logits = loaded.model(torch.tensor([[1, 5, 9, 13, 17]])).logits[0, -1]
    after = peak_rss_kb()
    where = sorted({str(d) for d in (getattr(loaded.model, "hf_device_map", None) or {}).values()})
    queue.put({"peak_mb": (after - before) / 1024, "logits": logits.tolist(), "where": where})


def run(path: str, placement: dict | None) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=measure, args=(path, placement, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    import torch

    root = Path(tempfile.mkdtemp())
    path = build(root, args.hidden, args.layers)
    on_disk = sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) / MB
    offload = str(root / "offload")
    placements = {
        "plain (cpu)": None,
        "device_map auto, cpu budget 1/4": {"device_map": "auto", "offload_folder": offload,
                                            "max_memory": {"cpu": f"{int(on_disk / 4)}MiB"}},
        "device_map auto, cpu budget 1/20": {"device_map": "auto", "offload_folder": offload,
                                             "max_memory": {"cpu": f"{int(on_disk / 20)}MiB"}},
    }
    table = Table(title=f"loading a {on_disk:.0f} MB checkpoint (Llama, hidden {args.hidden}, "
                        f"{args.layers} layers)")
    for column in ("placement", "devices", "peak CPU memory added", "÷ size on disk",
                   "max |Δ logit| vs plain"):
        table.add_column(column, justify="left" if column in ("placement", "devices") else "right")
    reference = None
    for label, placement in placements.items():
        result = run(path, placement)
        logits = torch.tensor(result["logits"])
        reference = logits if reference is None else reference
        table.add_row(label, ", ".join(result["where"]) or "cpu", f"{result['peak_mb']:.0f} MB",
                      f"{result['peak_mb'] / on_disk:.2f}",
                      f"{float((logits - reference).abs().max()):.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()

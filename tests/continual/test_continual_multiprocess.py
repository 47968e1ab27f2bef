"""`accelerate launch` with two CPU processes (gloo) against one process at the same global batch,
for every method on the synthetic world and the stateful ones (EWC, SI, a merge, a PEFT adapter)
also on real files through an open_clip model, in ONE launch (two interpreters start once).

Each process trains on its slice of the one global batch and the contrastive loss gathers every
slice's embeddings, so two processes take one process's steps: the training losses agree to
float precision (relative 1e-3) and the final metrics within TOLERANCE (0.02: a test image
whose two best classes are within float noise may flip; none did when measured).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from continual_real_files import open_clip_model, run_each, write_folders

TOLERANCE = 0.02
WORLD_METHODS = ("ewc", "si", "ema-merge", "lora", "dora", "vera", "bitfit", "lnfit", "ft-merge",
                 "joint")
REAL_METHODS = ("finetune", "ewc", "si", "zs-merge", "lora")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_for_every_method(tmp_path, continual_world):
    data = write_folders(tmp_path / "data")
    model = open_clip_model(tmp_path / "oc")
    common = ["--tasks", "2", "--json"]
    runs = [
        ["continual", "run", "--world", str(continual_world), "--method", m, *common]
        for m in WORLD_METHODS
    ] + [
        ["continual", "run", "--data", str(data), "--model", model, "--method", m, "--steps", "6"]
        + common
        for m in REAL_METHODS
    ]
    single = run_each(tmp_path / "one", runs)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(_port())]
    tests = str(Path(__file__).parents[1])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([tests, env.get("PYTHONPATH", "")])
    command = [*launch, "-m", "continual_real_files", str(tmp_path / "two"), json.dumps(runs)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    for rank in (0, 1):
        double = json.loads((tmp_path / "two" / f"rank{rank}.json").read_text())
        for one, two in zip(single, double, strict=True):
            label = (one["method"], "data" in one)
            assert one["processes"] == 1 and two["processes"] == 2, label
            assert two["steps_per_task"] == one["steps_per_task"], label
            assert two["budget"]["global_batch"] == one["budget"]["global_batch"], label
            assert two["options"] == one["options"], label
            if one["method"] == "ewc":  # its Fisher pass is charged on both paths
                assert one["budget"]["extra_mafs"] > 0, label
            for a, b in zip(one["train_loss"], two["train_loss"], strict=True):
                assert abs(a - b) <= 1e-3 * abs(a), (label, a, b)
            for metric in ("ka", "zs", "gm"):
                assert abs(two["final"][metric] - one["final"][metric]) <= TOLERANCE, label

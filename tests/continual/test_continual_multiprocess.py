"""`accelerate launch` with two CPU processes (gloo) against one process at the same global batch.

Each process takes its slice of the one global batch and the budget counts global steps, so the
two runs take the same steps per task; the contrastive loss sees half the negatives per process,
so the weights differ slightly: the final metrics must agree within 0.05. About 40 s on two
shared cores (two interpreters start, each loads torch and the model).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from continual_real_files import open_clip_model, write_folders
from typer.testing import CliRunner

from emulate.cli import app

TOLERANCE = 0.05


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    data = write_folders(tmp_path / "data")
    model = open_clip_model(tmp_path / "oc")
    args = ["continual", "run", "--data", str(data), "--model", model, "--tasks", "2"]
    args += ["--steps", "3", "--json"]
    one = CliRunner().invoke(app, args)
    assert one.exit_code == 0, one.output
    single = json.loads(one.output.strip().splitlines()[-1])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(_port())]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [*launch, "-m", "emulate", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert runs and all(r["processes"] == 2 for r in runs)
    for run in runs:
        assert run["steps_per_task"] == single["steps_per_task"]
        assert run["budget"]["global_batch"] == single["budget"]["global_batch"]
        for metric in ("ka", "zs", "gm"):
            assert abs(run["final"][metric] - single["final"][metric]) <= TOLERANCE, metric

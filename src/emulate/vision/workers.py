"""The vision world's jobs run on the common worker pool (``emulate.common.workers``).

A build trains its two members at once; the ablation trains three variants and evaluates each one
as soon as it is trained. Ctrl-C stops the workers at once.
"""

from emulate.common.workers import build_workers, can_spawn, run_jobs

__all__ = ["build_workers", "can_spawn", "run_jobs"]

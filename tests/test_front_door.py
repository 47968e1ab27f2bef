"""The front door is fast: help and argument errors answer without importing torch or
transformers (the engine loads on first use), and the lazy names still import."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from typer.main import get_command
from emulate.cli import app
try:
    get_command(app).main({args!r}, prog_name="emulate", standalone_mode=False)
except BaseException as exc:  # help exits; an argument error raises click's UsageError
    print(type(exc).__name__)
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


@pytest.mark.parametrize("args", [
    ["--help"], ["vision", "--help"], ["continual", "--help"], ["world", "build", "--help"],
    ["generate", "--help"], ["serve", "--help"], ["audit", "--help"],
    ["generate", "--formula", "x"],  # missing --model and prompts: an argument error
    ["no-such-command"],
], ids=" ".join)
def test_help_and_argument_errors_import_no_torch(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]


def test_the_lazy_names_import_and_sizes_agree():
    import emulate
    from emulate import Composition, upscale
    from emulate.world import SIZES
    from emulate.world.commands import SIZE_NAMES

    assert Composition.__name__ == "Composition" and upscale("a", "b", "c") == "a + 1*(b - c)"
    assert set(emulate.__all__) <= set(dir(emulate))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        emulate.nothing  # noqa: B018
    assert SIZE_NAMES == tuple(SIZES)

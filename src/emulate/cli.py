"""The `emulate` command line: mounts each system's commands, nothing else."""

from __future__ import annotations

import typer

from emulate.compose.commands import generate_command, lm_eval_command, placement_command
from emulate.continual.commands import continual_app
from emulate.knobs.commands import audit_command, sweep_command
from emulate.server.commands import serve_command
from emulate.vision.commands import vision_app
from emulate.world.commands import demo_command, eval_command, world_app

app = typer.Typer(
    help="Emulated fine-tuning and emulated disalignment: compose models at decoding time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Emulated fine-tuning and emulated disalignment: compose language models at decoding time."""


app.command("generate")(generate_command)
app.command("placement")(placement_command)
app.command("serve")(serve_command)
app.command("lm-eval", context_settings={"allow_extra_args": True,
                                         "ignore_unknown_options": True,
                                         "help_option_names": []})(lm_eval_command)
app.add_typer(world_app, name="world")
app.add_typer(vision_app, name="vision")
app.command("eval")(eval_command)
app.command("demo")(demo_command)
app.command("sweep")(sweep_command)
app.command("audit")(audit_command)
app.add_typer(continual_app, name="continual")

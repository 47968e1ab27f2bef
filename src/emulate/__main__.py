from emulate.cli import app

app(prog_name="emulate")

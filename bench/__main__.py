from metabench.cli import app

app(prog_name="metabench")

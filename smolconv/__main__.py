from smolconv.cli import app

app(prog_name="smolconv")

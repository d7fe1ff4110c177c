from smolconv.cli import run

run()

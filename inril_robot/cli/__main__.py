"""`python -m inril_robot.cli`: the local policy server and other subprocesses start the CLI this way."""

from inril_robot.cli import app

if __name__ == "__main__":
    app()

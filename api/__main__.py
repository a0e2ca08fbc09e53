"""`python -m api` is the same as the `accel-advisor` command."""

from api.cli import app

if __name__ == "__main__":
    app(prog_name="accel-advisor")

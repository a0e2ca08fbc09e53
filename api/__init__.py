"""The FastAPI service, its CLI and the admin UI. Importing it starts nothing and loads no model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("accel-advisor")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"

"""defuse: find out whether a fine-tuned language model can be backdoored, and take the backdoor out again."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("defuse")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

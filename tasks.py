"""invoke entry point: `invoke --list`. The tasks live in the kbisect package (kbisect.cli)."""

from kbisect.cli import ns

__all__ = ["ns"]

"""The ``affectlens`` command: one typer app; the commands live in ``stages`` and ``analyses``."""

from affectlens.cli import analyses, corpus, monitor, persona, remote, stages, steering  # noqa: F401  (importing registers commands)
from affectlens.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]

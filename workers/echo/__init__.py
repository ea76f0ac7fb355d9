"""`EchoWorker`: a command worker answering ``echo``, ``ping`` and ``status``."""

from workers.echo.worker import EchoCommand, EchoWorker

__all__ = ["EchoCommand", "EchoWorker"]

"""Helpers shared by the ``winipc`` subcommands."""

from __future__ import annotations

import json
from types import FrameType
from typing import IO, Any

import click

from winipc import errors as W


class Failure(click.ClickException):
    """A failure reported as ``error: MESSAGE`` on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.message}", err=True, file=file)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def note(message: str) -> None:
    """A status line for humans, on stderr."""
    click.echo(message, err=True)


class ErrorReportingGroup(click.Group):
    """A command group that reports winipc errors as ``error: ...`` (exit 1), also when
    run on its own (outside the top-level ``winipc`` group)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except W.WinIPCError as exc:
            raise Failure(str(exc)) from None


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that ends a command like Ctrl-C does (its cleanup runs)."""
    raise KeyboardInterrupt()

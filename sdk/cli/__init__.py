"""The ``edgerec`` command (:func:`main`); one module per group of subcommands."""

from __future__ import annotations

from edgerec.sdk.cli.app import build_parser, main

__all__ = ["build_parser", "main"]

"""Every command has help; defaults in help come from the code (never restated by hand); the
README's command lines use options that exist."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest
from conftest import ROOT
from edgerec.sdk.cli import build_parser
from edgerec.sdk.cli.common import SOURCES_ATTR, default_of


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(build_parser()))
LITERAL_DEFAULT = re.compile(r"default[^)]*?(?<![\w.-])\d+(\.\d+)?(?![\w-])")


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "edgerec")
def test_every_command_and_option_has_help(path):
    parser = COMMANDS[path]
    assert parser.description or not path, f"edgerec {' '.join(path)} has no description"
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"{action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "edgerec")
def test_defaults_in_help_are_read_from_the_code(path):
    parser = COMMANDS[path]
    sources = getattr(parser, SOURCES_ATTR, {})
    for action in parser._actions:
        if action.dest in sources:
            source, name = sources[action.dest]
            value = default_of(source, name)
            value = getattr(value, "value", value)
            assert action.default == value, action.dest
            assert "(default: " in action.help
        elif action.help:
            assert not LITERAL_DEFAULT.search(action.help), (
                f"{action.option_strings}: its help states a default by hand ({action.help!r}); "
                "add it with edgerec.sdk.cli.common.option")


def _readme_commands() -> list[list[str]]:
    """``edgerec ...`` lines of README's shell blocks (continuations joined)."""
    blocks, current, language = [], None, ""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in ("", "bash", "sh", "console"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if "edgerec " not in line:
                continue
            words = shlex.split(line)
            for i, word in enumerate(words):
                if word.endswith("edgerec") and i + 1 < len(words) and not word.endswith(".py"):
                    out.append(words[i + 1:])
                    break
    return out


@pytest.mark.parametrize("words", _readme_commands(), ids=lambda w: " ".join(w[:2]))
def test_the_readme_uses_only_options_the_commands_have(words):
    path: tuple[str, ...] = ()
    for word in words:
        if (*path, word) in COMMANDS:
            path = (*path, word)
        elif not word.startswith("-"):
            break
    assert path, f"README runs an unknown command: edgerec {' '.join(words)}"
    known = {s for a in COMMANDS[path]._actions for s in a.option_strings}
    flags = {w.split("=")[0] for w in words if w.startswith("--")}
    assert flags <= known, f"edgerec {' '.join(path)}: README uses {sorted(flags - known)}"

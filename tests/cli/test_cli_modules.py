"""The command line has one module per command, each registering just its command."""

from __future__ import annotations

import argparse
import importlib

from hfox_fit.cli import COMMAND_MODULES, build_parser


def _commands(parser: argparse.ArgumentParser) -> list:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def _command(module: str) -> str:
    return module.replace("_", "-")  # module _train_demo holds the command train-demo


def test_every_command_has_its_own_module_in_help_order():
    assert _commands(build_parser()) == [_command(m) for m in COMMAND_MODULES]


def test_each_module_registers_only_its_command_with_a_func():
    for name in COMMAND_MODULES:
        parser = argparse.ArgumentParser(prog="hfox-fit")
        sub = parser.add_subparsers(dest="command")
        importlib.import_module(f"hfox_fit.cli._{name}").register(sub)
        assert list(sub.choices) == [_command(name)]
        assert callable(sub.choices[_command(name)].get_default("func"))


def test_every_commands_help_prints_as_written():
    """argparse %-formats the options' help but not a description: a "%%" there prints doubled."""
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert "%%" not in text and "%(" not in text, name

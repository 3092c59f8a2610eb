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


def test_fit_run_and_demo_calibrate_by_default_with_the_librarys_replicates():
    """The population intervals a user sees are calibrated unless ``--calibrate 0`` says otherwise."""
    from hfox_fit.calibration import DEFAULT_REPLICATES, MIN_REPLICATES
    from hfox_fit.cli._common import DEFAULT_REPLICATES as CLI_DEFAULT
    from hfox_fit.cli._common import MIN_REPLICATES as CLI_MIN

    assert CLI_DEFAULT == DEFAULT_REPLICATES >= 10 and CLI_MIN == MIN_REPLICATES
    parser = build_parser()
    for argv in (["fit", "s.h5"], ["run", "raw", "-o", "out"], ["demo", "-o", "out"]):
        assert parser.parse_args(argv).calibrate == DEFAULT_REPLICATES, argv
        assert parser.parse_args([*argv, "--calibrate", "0"]).calibrate == 0, argv
    assert parser.parse_args(["calibrate", "s.h5"]).replicates == DEFAULT_REPLICATES


def test_calibration_runs_on_the_machines_cores_unless_told(monkeypatch):
    from hfox_fit.cli import _common

    monkeypatch.setattr(_common.os, "cpu_count", lambda: 16)
    assert _common.calibration_workers(None, None) == 4
    monkeypatch.setattr(_common.os, "cpu_count", lambda: None)
    assert _common.calibration_workers(None, None) == 1
    assert _common.calibration_workers(3, None) == 3
    assert _common.calibration_workers(None, "local:2") == 1  # (the scheduler runs them)

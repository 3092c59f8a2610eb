"""The README's two commands are what CI and a new user run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```\n(python3 -m pip install [^\n]+)\n```", text)


def test_readme_has_the_main_and_the_test_command():
    main, tests = _commands()[:2]
    assert "torch==2.13.0" in main and "hfox-fit demo" in main
    assert "torch==2.13.0" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = _commands()[1].split(" && ")
    assert install in ci
    assert test in ci
    assert "ruff check" in ci

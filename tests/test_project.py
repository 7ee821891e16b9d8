"""Project-level checks: README's two set-up commands and CI agree; the CLI answers."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Set up\s+```bash\n(.*?)```", text, re.S)
    assert block, "README must start with a '## Set up' bash block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_has_exactly_two_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "pytest" in cmds[1] and "torch==2.13.0" in cmds[0] and "torch==2.13.0" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_cli_version_and_help():
    from facerestore import __version__

    out = subprocess.run([sys.executable, "-m", "facerestore", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "facerestore", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "examples:" in out.stdout


def test_cli_unknown_option_fails():
    out = subprocess.run([sys.executable, "-m", "facerestore", "--no-such-flag"], capture_output=True, text=True)
    assert out.returncode == 2


def _documented_commands() -> list[tuple[str, str, list[str]]]:
    """(file, sub-command, words) of every ``facerestore SUBCOMMAND ...`` written in the docs, model cards, configs,
    benchmark scripts and the package's own messages; a command ends at a shell separator or the end of its line."""
    from facerestore.cli import SUBCOMMANDS

    files = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "configs").glob("*.yaml")), *sorted((REPO / "benchmarks").glob("*.py")),
             *sorted((REPO / "src" / "facerestore").rglob("*.md")),
             *sorted((REPO / "src" / "facerestore").rglob("*.py"))]
    found = []
    for path in files:
        text = re.sub(r"\\\n\s*", " ", path.read_text())  # shell continuation lines
        for m in re.finditer(r"facerestore ([a-z][a-z-]*)((?:[ \t]+[^\s`'\"|)]+)*)", text):
            if m.group(1) not in SUBCOMMANDS:
                continue  # prose ("facerestore restores ...")
            words = []
            for word in m.group(2).split():
                if word in ("&&", "||", ";", ">", "2>", "<", "#") or word.startswith(("#", ">")):
                    break
                words.append(word)
            found.append((str(path.relative_to(REPO)), m.group(1), words))
    return found


def test_documented_commands_use_options_that_exist():
    """Every option named in a documented ``facerestore`` command exists in that sub-command (a removed or renamed
    flag left in a README, model card, config comment or message is the doc rot users hit first)."""
    from facerestore.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    commands = _documented_commands()
    assert len(commands) > 50  # the scan reads the docs (README alone names dozens)
    stale = []
    for path, name, words in commands:
        known = {opt for action in sub[name]._actions for opt in action.option_strings}
        for word in words:
            option = word.strip("[]().,;:").split("=", 1)[0]
            if option.startswith("-") and len(option) > 1 and option not in known:
                stale.append(f"{path}: facerestore {name} {option}")
    assert not stale, stale

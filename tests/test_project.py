"""Project-level checks: README's two set-up commands and CI agree; the CLI answers."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

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


DOC_FILES = ("README.md", "benchmarks/README.md", "docs/*.md", "configs/*.yaml", "benchmarks/*.py",
             "benchmarks/results/**/*.md", "src/facerestore/**/*.md", "src/facerestore/**/*.py")
SHELL_SEPARATORS = ("&&", "||", ";", ">", "2>", "<", "#")


def _documented_commands(program: str) -> list[tuple[str, str, list[str]]]:
    """(file, name, words) of every ``PROGRAM NAME ...`` written in the docs, results, model cards, configs,
    benchmark scripts and the package's own messages (``program``: a regular expression whose group 1 is the name);
    a command ends at a shell separator or the end of its line (continued lines joined)."""
    found = []
    for path in sorted({p for pattern in DOC_FILES for p in REPO.glob(pattern)}):
        text = re.sub(r"\\\n\s*", " ", path.read_text())  # shell continuation lines
        for m in re.finditer(program + r"((?:[ \t]+[^\s`'\"|)]+)*)", text):
            words = []
            for word in m.group(m.lastindex).split():
                if word in SHELL_SEPARATORS or word.startswith(("#", ">")):
                    break
                words.append(word)
            found.append((str(path.relative_to(REPO)), m.group(1), words))
    return found


def _options(words: list[str]) -> list[str]:
    return [w for w in (word.strip("[]().,;:").split("=", 1)[0] for word in words) if w.startswith("-") and len(w) > 1]


def test_documented_commands_use_options_that_exist():
    """Every option named in a documented ``facerestore`` command exists in that sub-command (a removed or renamed
    flag left in a README, model card, config comment or message is the doc rot users hit first)."""
    from facerestore.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    commands = [c for c in _documented_commands(r"facerestore ([a-z][a-z-]*)") if c[1] in SUBCOMMANDS]  # not prose
    assert len(commands) > 50  # the scan reads the docs (README alone names dozens)
    stale = []
    for path, name, words in commands:
        known = {opt for action in sub[name]._actions for opt in action.option_strings}
        stale += [f"{path}: facerestore {name} {opt}" for opt in _options(words) if opt not in known]
    assert not stale, stale


def test_documented_configs_and_zoo_entries_exist():
    """Every config file a documented ``facerestore train/search`` command runs exists, and every name a
    documented ``facerestore models download`` fetches is a zoo entry (the help's own examples included)."""
    from facerestore import zoo

    entries = {e.name for e in zoo.list_entries()}
    stale, configs, names = [], 0, 0
    for path, name, words in _documented_commands(r"facerestore (train|search|models)"):
        if name in ("train", "search"):
            for w in words:
                if w.endswith(".yaml") and w.startswith("configs/"):
                    configs += 1
                    stale += [] if (REPO / w).is_file() else [f"{path}: facerestore {name} {w}"]
        elif words[:1] == ["download"]:
            for w in words[1:]:
                if w.startswith("-") or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", w):
                    continue
                names += 1
                stale += [] if w in entries else [f"{path}: facerestore models download {w}"]
    assert configs > 5 and names > 5 and not stale, stale


def test_documented_benchmark_commands_exist():
    """Every ``python benchmarks/NAME.py --option`` in the docs names a script that exists and options it declares
    (read from its ``add_argument`` calls, without running it)."""
    import ast

    def declared(script: Path) -> set[str]:
        return {a.value for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "add_argument"
                for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}

    commands = _documented_commands(r"python (?:-m )?benchmarks/([a-z_0-9]+)\.py")
    assert len(commands) > 50
    stale = []
    for path, name, words in commands:
        script = REPO / "benchmarks" / f"{name}.py"
        if not script.is_file():
            stale.append(f"{path}: benchmarks/{name}.py does not exist")
            continue
        known = declared(script)
        stale += [f"{path}: benchmarks/{name}.py {opt}" for opt in _options(words) if opt not in known]
    assert not stale, stale


def test_documented_links_and_paths_exist():
    """Every relative markdown link, and every repository path quoted in backticks (docs/..., configs/...,
    benchmarks/results/..., src/facerestore/..., examples/..., scripts/...), names a file or folder that exists."""
    missing, checked = [], 0
    for path in sorted({p for pattern in DOC_FILES if pattern.endswith(".md") for p in REPO.glob(pattern)}):
        text = path.read_text()
        targets = [(path.parent / m.group(1)) for m in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
                   if not m.group(1).startswith(("http:", "https:", "mailto:"))]
        targets += [REPO / m.group(1) for m in re.finditer(
            r"`((?:docs|benchmarks/results|configs|src/facerestore|scripts|examples)/[A-Za-z0-9_./-]+)`", text)]
        checked += len(targets)
        missing += [f"{path.relative_to(REPO)} -> {t}" for t in targets if not t.exists()]
    assert checked > 100 and not missing, missing

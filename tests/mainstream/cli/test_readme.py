"""The README's generated parts and command examples stay true to the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from mainstream.cli.main import cli
from mainstream.node.settings_reference import README_BEGIN, README_END, config_reference_markdown

README = Path(__file__).resolve().parents[3] / "README.md"


def test_configuration_reference_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert README_BEGIN in text and README_END in text
    embedded = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert embedded == config_reference_markdown().strip(), (
        "README's configuration reference is stale: paste the output of "
        "`mainstream config reference` between its markers"
    )


def readme_commands() -> list[list[str]]:
    """Every `mainstream ...` command line in the README's bash blocks."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0]
            # `FP=$(mainstream base pretrain ... | tail -n 1)`: the command inside counts too.
            commands.extend(
                shlex.split(inner)[1:] for inner in re.findall(r"\$\((mainstream[^|)]*)", line)
            )
            for part in re.split(r"&&|;", line):
                words = shlex.split(part)
                if words and words[0] == "mainstream":
                    commands.append(words[1:])
    return commands


def test_ci_installs_and_tests_as_the_readme_says() -> None:
    """`.ci/run` runs the README's install and test commands, so a green CI means a newcomer's
    fresh machine passes too."""
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    install = 'python3 -m pip install -c requirements/constraints.txt -e ".[dev]"'
    assert install in text
    assert install.replace("pip install", "pip install --disable-pip-version-check -q") in ci
    assert "scripts/install-system-packages" in text and "scripts/install-system-packages" in ci
    assert "python3 -m pytest -q" in text and ci.rstrip().endswith("python3 -m pytest -q")
    pins = (README.parent / "requirements" / "constraints.txt").read_text(encoding="utf-8")
    for package in ("tensorflow_cpu", "keras", "openvino", "pytest", "numpy"):
        assert re.search(rf"^{package}==\S+$", pins, flags=re.M | re.I), package


def test_every_readme_command_names_real_subcommands_and_options() -> None:
    commands = readme_commands()
    assert len(commands) > 15
    context = click.Context(cli)
    for words in commands:
        command: click.Command = cli
        consumed = 0
        while isinstance(command, click.Group) and consumed < len(words):
            sub = command.get_command(context, words[consumed])
            assert sub is not None, f"unknown command in README: mainstream {' '.join(words)}"
            command, consumed = sub, consumed + 1
        known = {name for param in command.params for name in getattr(param, "opts", [])}
        known |= {name for param in command.params for name in getattr(param, "secondary_opts", [])}
        for word in words[consumed:]:
            if word.startswith("-") and word != "-":
                option = word.split("=", 1)[0]
                assert option in known, f"unknown option {option} in: mainstream {' '.join(words)}"

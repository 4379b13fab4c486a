"""--help that teaches: examples on every command, no type placeholders on flags or braces in usage lines,
the preset's values on train's options, the quick start on a bare `nanogpt`, and shell completion of run
and dataset names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt_cli.cli import app

pytest_plugins = ("pytester",)  # to run a small test session of its own (the cli fixture's own test)

COMMANDS = ["prepare", "train", "sample", "eval", "import", "export", "info", "plot", "rm", "mv", "ladder"]


def _help(cli, command: str) -> str:
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_command_is_documented_here():
    assert sorted(c.name for c in app.registered_commands) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_ends_with_real_examples(cli, command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = _help(cli, command)
    examples = text.split("Examples", 1)[1].split("╭", 1)[0]
    lines = [line.strip() for line in examples.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 4, lines
    # each example runs a real command
    assert all(re.search(r"(^|\| )nanogpt (\w+)", line).group(2) in COMMANDS for line in lines), lines


@pytest.mark.parametrize("command", COMMANDS)
def test_no_type_placeholders_on_flags_and_no_braces_in_usage(cli, command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = _help(cli, command)
    assert "<bool>" not in text and "<list[" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage


def test_train_help_shows_the_presets_values(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    text = _help(cli, "train")
    assert re.search(r"--n-layer .*Transformer blocks\. Must be at least 1\. \(cpu preset: 4\)", text)
    assert re.search(r"--optimizer .*\(cpu preset: muon\)", text)
    assert "extra [tensorboard]" in text  # brackets in help texts are text, not markup


def test_bare_nanogpt_prints_the_quick_start(cli):
    result = cli()
    assert result.exit_code == 0
    for command in ("nanogpt prepare shakespeare", "nanogpt train", 'nanogpt sample --prompt "ROMEO:"', "nanogpt eval",
                    "nanogpt info"):
        assert command in result.stdout


def _complete(home, words: str) -> list[str]:
    env = {**os.environ, "NANOGPT_HOME": str(home), "_NANOGPT_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}
    done = subprocess.run([sys.executable, "-c", "from nanogpt_cli.cli import main; main()"], env=env,
                          capture_output=True, text=True, timeout=60)
    return done.stdout.split()


def test_shell_completion_of_run_and_dataset_names(cli, home, trained_run):
    script = cli("--show-completion", "bash")
    assert script.exit_code == 0 and "_NANOGPT_COMPLETE=complete_bash" in script.stdout
    assert _complete(home, "nanogpt sample --run ") == [trained_run]
    assert _complete(home, "nanogpt sample --run x") == []
    assert _complete(home, "nanogpt train --dataset po") == ["poems"]
    assert _complete(home, "nanogpt info ") == ["poems", trained_run]
    assert _complete(home, "nanogpt plot t") == [trained_run]


def test_the_cli_fixture_fails_a_test_that_ignores_a_failed_call(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(
        test_ignored="def test_ignored(cli):\n    cli('no-such-command')\n",
        test_checked="def test_checked(cli):\n    assert cli('no-such-command').exit_code == 2\n",
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)  # the ignored failure is an error at the fixture's end
    assert "exited 2 and the test never checked" in result.stdout.str()

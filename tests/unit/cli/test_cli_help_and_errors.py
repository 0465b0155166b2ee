"""Every command has --help with an example, and answers one bad input with one line and exit code 2."""

import pytest
from click.testing import CliRunner

from lookalike.cli import cli

COMMANDS = ["export", "embed", "knn", "ood", "predict", "evaluate", "finetune", "attack", "bench", "agree", "run",
            "demo", "tokenize", "fit-mlm"]


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and f"lookalike {command}" in result.output


@pytest.mark.parametrize("command,args,needle", [
    ("embed", ["{t}/nomodel", "{t}/c.txt", "{t}/out"], "no such model folder"),
    ("knn", ["{t}/nostore", "{t}/nn.h5"], "not an embedding store"),
    ("ood", ["--train", "{t}/nostore", "--test", "{t}/nostore", "{t}/o.json"], "not an embedding store"),
    ("predict", ["{t}/nomodel", "{t}/c.txt", "{t}/out", "--task", "qa"], "no such model folder"),
    ("evaluate", ["{t}/c.txt", "{t}/nopred.json"], "no such predictions file"),
    ("finetune", ["{t}/nomodel", "{t}/c.txt", "{t}/out", "--task", "cls", "--every", "2", "--offset", "5"],
     "offset 5"),
    ("attack", ["{t}/nomodel", "{t}/c.txt", "{t}/out", "--mlm", "x"], "no such model folder"),
    ("bench", ["{t}/nomodel"], "no such model folder"),
    ("agree", ["--knn", "a={t}/x.h5", "--knn", "b={t}/y.h5"], "no such neighbour file"),
    ("run", ["{t}/nope.yaml"], "no such experiment file"),
    ("demo", ["{t}/c.txt"], "not a folder"),
    ("tokenize", ["{t}/nomodel", "{t}/c.txt", "{t}/out"], "no such model folder"),
    ("export", ["{t}/nomodel-folder", "{t}/out", "--keep-layers", "a,b"], "comma-separated integers"),
    ("fit-mlm", ["{t}/nomodel", "{t}/c.txt", "{t}/out"], "cannot load a BERT encoder"),
])
def test_one_bad_input_per_command(tmp_path, command, args, needle):
    (tmp_path / "c.txt").write_text("a line\n")
    result = CliRunner().invoke(cli, [command, *[a.replace("{t}", str(tmp_path)) for a in args]])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output

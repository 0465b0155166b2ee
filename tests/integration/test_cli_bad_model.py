"""A folder that is not an export is one line and exit code 2, for every command that loads one."""

from click.testing import CliRunner

from lookalike.cli import cli

COMMANDS = ["export", "embed", "knn", "ood", "predict", "evaluate", "finetune", "attack", "bench", "agree", "run",
            "demo", "tokenize", "fit-mlm"]


def test_bad_model_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "m"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no tokenizer" in result.output and "Traceback" not in result.output

from click.testing import CliRunner

from lookalike.cli import cli


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("export",):
        assert name in result.output


def test_bad_model_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "m"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no tokenizer" in result.output and "Traceback" not in result.output

"""The CLI builds the parser of the subcommand it runs, and every parser only where it is asked for."""

import pytest

from lit_seg.cli.command import LitSegCLI, main


@pytest.fixture
def built(monkeypatch):
    names: list[str] = []
    original = LitSegCLI._prepare_subcommand_parser

    def recording(self, klass, subcommand, **kwargs):
        names.append(subcommand)
        return original(self, klass, subcommand, **kwargs)

    monkeypatch.setattr(LitSegCLI, "_prepare_subcommand_parser", recording)
    return names


@pytest.mark.parametrize("subcommand", ["fit", "validate", "predict"])
def test_a_subcommand_gets_only_its_own_parser_and_all_its_options(built, subcommand, capsys):
    with pytest.raises(SystemExit) as stop:
        main([subcommand, "--help"])
    assert stop.value.code == 0
    assert built == [subcommand]
    out = capsys.readouterr().out
    assert "--model.head" in out and "--trainer.max_epochs" in out and "--experiment" in out
    assert ("--writer.format" in out) == (subcommand == "predict")


def test_the_top_level_help_still_lists_every_subcommand(built, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert built == ["fit", "validate", "test", "predict"]
    out = capsys.readouterr().out
    assert all(name in out for name in ("fit", "validate", "test", "predict"))


def test_an_unknown_subcommand_is_still_a_one_line_error(built, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fitt", "--config", "experiments/ccnet_r2.yaml"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lit-seg: error: "), err
    # Not a subcommand: every parser is built, so the error still names every choice.
    assert "invalid choice: 'fitt' (choose from 'fit', 'validate', 'test', 'predict')" in err[0], err
    assert built == ["fit", "validate", "test", "predict"]

"""The CLI builds the parser of the subcommand it runs, and every parser only where it is asked for."""

import pytest

from lit_seg.api.parser import LitSegCLI
from lit_seg.cli import TOOLS, main


@pytest.fixture
def built(monkeypatch):
    """The parsers built: LightningCLI calls ``add_arguments_to_parser`` once for each."""
    parsers: list[object] = []
    original = LitSegCLI.add_arguments_to_parser

    def recording(self, parser):
        parsers.append(parser)
        return original(self, parser)

    monkeypatch.setattr(LitSegCLI, "add_arguments_to_parser", recording)
    return parsers


@pytest.mark.parametrize("subcommand", ["fit", "validate", "predict"])
def test_a_subcommand_gets_only_its_own_parser_and_all_its_options(built, subcommand, capsys):
    with pytest.raises(SystemExit) as stop:
        main([subcommand, "--help"])
    assert stop.value.code == 0
    assert len(built) == 1
    out = capsys.readouterr().out
    assert "--model.head" in out and "--trainer.max_epochs" in out and "--experiment" in out
    assert ("--writer.format" in out) == (subcommand == "predict")


def test_the_top_level_help_lists_every_subcommand_with_a_line_each(built, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert len(built) == 4
    lines = capsys.readouterr().out.splitlines()
    for name in ("fit", "validate", "test", "predict", *TOOLS):
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert len(line.split()) > 2, line  # the name, then what it does


def test_an_unknown_subcommand_is_a_one_line_error_naming_every_choice(built, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fitt", "--config", "experiments/ccnet_r2.yaml"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lit-seg: error: unknown subcommand 'fitt'"), err
    assert all(f" {name}," in err[0] or f" {name} " in err[0] or err[0].endswith(f" {name})")
               for name in ("fit", "validate", "test", "predict", *TOOLS)), err
    assert built == []  # said before any parser is built


def test_a_class_named_on_the_command_line_gets_its_own_defaults_not_the_modules(capsys):
    """jsonargparse#460: a class_path replacing an init default kept that class's defaults (FCNHead's
    dropout 0.1 in every OCNet head, SGD's lr 0.01 in Adam); the module's defaults are None for that."""
    import yaml

    with pytest.raises(SystemExit):
        main(["fit", "--model.head", "lit_seg.models.heads.OCHead", "--model.head.init_args.mode", "asp",
              "--model.optimizer", "torch.optim.Adam", "--print_config"])
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["head"]["init_args"]["dropout"] is None and model["head"]["init_args"]["activation"] is None
    assert model["optimizer"]["init_args"]["lr"] == 0.001 and model["optimizer"]["init_args"]["weight_decay"] == 0

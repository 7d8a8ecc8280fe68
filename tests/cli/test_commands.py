"""The command table: every command is listed, loads, and parses; ``lmforge --help`` stays light; the
flags derived from settings dataclasses match their fields one for one."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from lmforge.cli.flags import add_dataclass_arguments, dataclass_from_args
from lmforge.cli.main import COMMANDS, command_module, main


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if not isinstance(a, argparse._HelpAction)}


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name, (_, help_text) in COMMANDS.items():
        assert f"    {name} " in out and help_text.split()[0] in out, name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_its_module_and_help(name, capsys):
    module = command_module(name)
    assert callable(module.add_arguments) and callable(module.run)
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lmforge {name} ")


def test_help_loads_no_command_and_no_torch():
    code = (
        "import sys\n"
        "from lmforge.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('lmforge.cli.') and m not in "
        "('lmforge.cli.main',)]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_command_without_models_loads_no_model_library(tmp_path):
    # `lmforge runs` reads run folders: neither torch nor transformers (0.35 s against 1.35 s)
    code = (
        "import sys\n"
        "from lmforge.cli.main import main\n"
        f"assert main(['runs', {str(tmp_path)!r}]) == 0\n"
        "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["trian", "x.yaml"])
    assert exit_.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err


def test_every_serve_setting_is_a_flag_and_every_flag_a_setting():
    from lmforge.cli import serve
    from lmforge.serving.settings import ServeSettings

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    options = _options(parser)
    secret = {"admin_key"}  # from $LMFORGE_ADMIN_KEY only: argv is visible to every user of the machine
    assert set(options) == {f.name for f in dataclasses.fields(ServeSettings)} - secret
    for f in dataclasses.fields(ServeSettings):
        if f.name in secret:
            continue
        if f.name != "sources":
            assert options[f.name].option_strings == ["--" + f.name.replace("_", "-")]
        if f.default is not dataclasses.MISSING and not isinstance(f.default, bool):
            assert options[f.name].default == f.default, f.name
    args = parser.parse_args(["runs/a", "runs/b", "--port", "9000", "--allow-insecure", "--dtype", "float32"])
    settings = dataclass_from_args(ServeSettings, args, max_batch=4)
    assert settings.sources == ["runs/a", "runs/b"] and settings.port == 9000 and settings.allow_insecure
    assert settings.dtype == "float32" and settings.max_batch == 4 and settings.max_queue == 64
    with pytest.raises(SystemExit):
        parser.parse_args(["runs/a", "--combine", "median"])  # choices come from the field's metadata


def test_generation_flags_are_the_generation_options():
    from lmforge.cli.generate import add_generation_arguments, generation_options
    from lmforge.models.decoding import GenerationOptions

    parser = argparse.ArgumentParser()
    add_generation_arguments(parser)
    assert {f.name for f in dataclasses.fields(GenerationOptions)} <= set(_options(parser))
    options = generation_options(parser.parse_args(["m"]))
    assert options == GenerationOptions(max_new_tokens=256)  # the CLI's own default length
    args = parser.parse_args(["m", "--stop", "\n", "--stop", "END", "--top-k", "5", "--temperature", "0.7"])
    assert generation_options(args) == GenerationOptions(
        max_new_tokens=256, stop=["\n", "END"], top_k=5, temperature=0.7
    )
    assert parser.parse_args(["m"]).stop is None  # no list shared between parses


@dataclasses.dataclass
class _Settings:
    names: list[str] = dataclasses.field(default_factory=list, metadata={"positional": True, "metavar": "NAME"})
    size: int | None = dataclasses.field(default=None, metadata={"help": "how big"})
    rate: float = 0.5
    mode: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})
    fast: bool = False
    tags: list[str] = dataclasses.field(default_factory=list)


def test_dataclass_flags_round_trip():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, _Settings, defaults={"rate": 0.25})
    assert _options(parser)["size"].help == "how big" and _options(parser)["names"].metavar == "NAME"
    args = parser.parse_args(["x", "y", "--size", "3", "--mode", "b", "--fast", "--tags", "t1", "--tags", "t2"])
    assert dataclass_from_args(_Settings, args) == _Settings(["x", "y"], 3, 0.25, "b", True, ["t1", "t2"])
    assert dataclass_from_args(_Settings, parser.parse_args(["x"])) == _Settings(["x"], rate=0.25)
    skipped = argparse.ArgumentParser()
    add_dataclass_arguments(skipped, _Settings, exclude=("names", "tags"))
    assert set(_options(skipped)) == {"size", "rate", "mode", "fast"}

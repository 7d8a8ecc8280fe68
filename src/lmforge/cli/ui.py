"""``lmforge ui [--runs DIR]``: the web dashboard and playground (``lmforge.ui``), served by uvicorn
on loopback by default. Every flag is a ``UiSettings`` field. The key comes from ``--api-key`` or,
better (argv is visible to other users), ``$LMFORGE_API_KEY``."""

import argparse
import os

from lmforge.cli.flags import add_dataclass_arguments, dataclass_from_args
from lmforge.ui.server import run_ui
from lmforge.ui.settings import UiSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, UiSettings)


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("LMFORGE_API_KEY") or None
    return run_ui(dataclass_from_args(UiSettings, args, api_key=api_key))

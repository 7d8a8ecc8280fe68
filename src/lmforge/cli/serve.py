"""``lmforge serve MODEL ...``: task routes and an OpenAI-compatible API over HTTP. Every flag is a
``ServeSettings`` field (``serving/settings.py``: name, type, default and help in one place)."""

import argparse
import os

from lmforge.cli.flags import add_dataclass_arguments, dataclass_from_args
from lmforge.serving.server import serve
from lmforge.serving.settings import ServeSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, ServeSettings, exclude=("admin_key",))


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("LMFORGE_API_KEY") or None
    admin_key = os.environ.get("LMFORGE_ADMIN_KEY") or None  # the environment only: argv is public
    return serve(dataclass_from_args(ServeSettings, args, api_key=api_key, admin_key=admin_key))

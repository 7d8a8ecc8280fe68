"""``lmforge demo``: ``lmforge train`` on the bundled demo config (MiniLM on BBC News)."""

import argparse
from pathlib import Path

from lmforge.cli import train

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    train.add_arguments(p, config=False)


def run(args: argparse.Namespace) -> int:
    args.config = str(DEMO_CONFIG)
    return train.run(args)

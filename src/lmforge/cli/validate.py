"""``lmforge validate CONFIG``: check a config and read all its data, without training."""

import argparse

from lmforge.cli.common import OVERRIDES_HELP, config_overrides
from lmforge.config import load_config
from lmforge.config.loader import config_to_dict
from lmforge.config.model_spec import as_spec
from lmforge.data.readers import Problems
from lmforge.errors import DataError, LmforgeError
from lmforge.models.family import check_model
from lmforge.tasks import get_task
from lmforge.tracking.run_folder import RunFolder
from lmforge.training.adversarial import check_adversarial
from lmforge.training.job import check_method_data, limit_training_data
from lmforge.training.rdrop import check_rdrop


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, config_overrides(args))
    problems = Problems(collect=True, skip=config.data.on_error == "skip")
    task = get_task(config.task)
    data = task.load_data(config, problems)
    limit_training_data(config, data)  # the examples training would use
    spec = as_spec(config.model)
    checks = [
        lambda: check_model(spec),
        lambda: check_method_data(config, data),
        lambda: check_adversarial(config, task),
        lambda: check_rdrop(config, task),
        lambda: RunFolder(config.output).check_writable(config_to_dict(config), config.resume, config.overwrite),
    ]
    for check in checks:
        try:
            check()
        except LmforgeError as exc:
            problems.report(str(exc))
    if problems.items:
        for item in problems.items:
            print(f"problem: {item}")
        raise DataError(f"{args.config}: {len(problems.items)} problem(s) found")
    if problems.skipped:
        print(f"skipped {problems.skipped} bad row(s) (data.on_error: skip); the first: {problems.first_skipped}")
    labels = ", ".join(data.labels.names[:10]) + (" ..." if len(data.labels.names) > 10 else "")
    label_part = f"; {len(data.labels.names)} labels ({labels})" if data.labels.names else ""
    print(
        f"{args.config}: ok -- {len(data.train)} train, {len(data.validation)} validation, "
        f"{len(data.test)} test examples{label_part}"
    )
    for note in data.notes:  # what training would log about the data (tag scheme, repairs, ...)
        print(f"note: {note}")
    return 0

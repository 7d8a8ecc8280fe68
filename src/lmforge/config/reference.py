"""The config reference as a markdown table, generated from the schema (``python -m
lmforge.config.reference``); docs/reference/config.md holds this output, and a test keeps them in step."""

import json

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from lmforge.config.loader import _section_models
from lmforge.config.model_spec import DEFAULT_FAMILY, MODEL_SPECS
from lmforge.config.schema import DataSource, Fields, JobConfig

# Sections documented in tables of their own, below the main one.
OWN_TABLES = ("DataSource", "Fields", *(spec.__name__ for spec in MODEL_SPECS.values()))


def rows(model: type[BaseModel] = JobConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sections = [m for m in _section_models(field.annotation) if m.__name__ not in OWN_TABLES]
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "required"
        elif field.default_factory is not None:
            value = field.get_default(call_default_factory=True)
            default = "see below" if sections else (json.dumps(value) if isinstance(value, (list, dict)) else "—")
        else:
            default = json.dumps(field.default)
        out.append((key, default, field.description or ""))
        for section in sections:
            out.extend(rows(section, key + "."))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {_cell(m)} |" for k, d, m in rows()]
    lines += [
        "",
        "A data source given as an object (`data.train: {path: …, …}`):",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{k}` | `{d}` | {_cell(m)} |" for k, d, m in rows(DataSource)]
    lines += ["", "`data.fields` (and a source's `fields`):", "", "| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {_cell(m)} |" for k, d, m in rows(Fields)]
    for family, spec in MODEL_SPECS.items():
        what = spec.model_fields["family"].description
        assert what is not None  # every family documents its ``family`` field
        if family == DEFAULT_FAMILY:
            what += f"; `model: ALIAS_OR_FOLDER` is `{{family: {family}, path: ALIAS_OR_FOLDER}}`"
        lines += [
            "",
            f"`model: {{family: {family}, …}}`, {what}:",
            "",
            "| key | default | meaning |",
            "|---|---|---|",
        ]
        lines += [f"| `{k}` | `{d}` | {_cell(m)} |" for k, d, m in rows(spec, "model.") if k != "model.family"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())

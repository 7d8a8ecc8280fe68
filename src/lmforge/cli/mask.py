"""``lmforge mask --input FILE --output FILE``: personal data masked in a file: JSON lines (the
``--field`` of each row, default ``text``), CSV/TSV (the ``--field`` column) or plain text (each
line). The output has the input's format and everything else of each row. ``--ner RUN`` adds
person, place and organization names from an NER run. Reversible masking: the key in
``$LMFORGE_MASK_KEY`` (never on the command line); ``--unmask`` turns a masked file back."""

import argparse
import csv
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

from lmforge.cli.common import add_output_arguments, output_file
from lmforge.data.readers import json_fault
from lmforge.errors import DataError
from lmforge.masking.mask import TYPES, Masker
from lmforge.tracking.run_folder import write_atomic

KEY_ENV = "LMFORGE_MASK_KEY"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="a .jsonl, .csv, .tsv or text file")
    add_output_arguments(p, "where the masked file goes (the same format)", required=True)
    p.add_argument("--types", help=f"comma-separated, default all: {', '.join(TYPES)}")
    p.add_argument("--ner", metavar="RUN", help="an NER run for person, place and organization names")
    p.add_argument("--field", default="text", help="the JSON field or CSV/TSV column to mask (default: text)")
    p.add_argument("--unmask", action="store_true", help=f"turn a masked file back (needs ${KEY_ENV})")
    p.add_argument("--batch-size", type=int, default=64)


def run(args: argparse.Namespace) -> int:
    source = Path(args.input)
    if not source.is_file():
        raise DataError(f"--input {source}: no such file")
    target = output_file(args, (args.input,))
    assert target is not None, "--output is required"
    types = tuple(t.strip() for t in args.types.split(",")) if args.types else TYPES
    masker = Masker(types, args.ner, os.environ.get(KEY_ENV) or None)
    texts, rebuild = _read(source, args.field)
    counts: Counter = Counter()
    if args.unmask:
        out = [masker.unmask(t) for t in texts]
    else:
        out = []
        for i in range(0, len(texts), args.batch_size):
            masked, spans = masker.mask(texts[i : i + args.batch_size])
            out += masked
            counts.update(s.type for found in spans for s in found)
    write_atomic(target, rebuild(out))
    if masker.names_skipped and not args.unmask:
        print(f"lmforge: {', '.join(masker.names_skipped)} not masked: give --ner RUN to mask names", file=sys.stderr)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing found"
    print(
        f"{len(texts)} texts {'unmasked' if args.unmask else 'masked'} into {target}"
        + ("" if args.unmask else f": {summary}")
    )
    return 0


def _read(path: Path, field: str):
    """The texts of ``path`` and a function that writes the file back with other texts."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: malformed JSON ({json_fault(exc)[1]})") from None
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise DataError(f"{path}:{n}: no text field {field!r} (--field names it)")
            rows.append(row)

        def jsonl(out):
            return "".join(json.dumps({**r, field: t}, ensure_ascii=False) + "\n" for r, t in zip(rows, out))

        return [r[field] for r in rows], jsonl
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        table = list(csv.reader(io.StringIO(text), delimiter=delimiter))
        if not table or field not in table[0]:
            raise DataError(f"{path}: no column {field!r} in the header (--field names it)")
        column = table[0].index(field)
        body = table[1:]
        for n, row in enumerate(body, 2):
            if len(row) <= column:
                raise DataError(f"{path}:{n}: the row has no {field!r} column")

        def delimited(out):
            buffer = io.StringIO()
            writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
            writer.writerow(table[0])
            for row, t in zip(body, out):
                writer.writerow([*row[:column], t, *row[column + 1 :]])
            return buffer.getvalue()

        return [r[column] for r in body], delimited
    lines = text.splitlines()
    return lines, lambda out: "".join(t + "\n" for t in out)

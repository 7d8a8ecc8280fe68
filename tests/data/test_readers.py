import json

import pytest

from lmforge.config.schema import DataConfig, DataSource, Fields
from lmforge.data.examples import read_text_examples
from lmforge.data.readers import Problems
from lmforge.errors import DataError


def read(path, **fields):
    return read_text_examples(DataSource(path=str(path)), DataConfig(fields=Fields(**fields)), Problems())


def test_jsonl_json_csv_tsv_agree(tmp_path):
    rows = [{"review": 'good, "very" good', "stars": 1}, {"review": "bad", "stars": 0}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text('\ufeffreview,stars\n"good, ""very"" good",1\nbad,0\n')
    (tmp_path / "a.tsv").write_text('review\tstars\ngood, "very" good\t1\nbad\t0\n')
    for name in ("a.jsonl", "a.json", "a.csv", "a.tsv"):
        got = read(tmp_path / name, text="review", label="stars")
        assert [(e.text, e.label) for e in got] == [('good, "very" good', "1"), ("bad", "0")], name


def test_headerless_csv_by_column_index(tmp_path):
    (tmp_path / "a.csv").write_text("1,great\n0,awful\n")
    got = read(tmp_path / "a.csv", text=1, label=0)
    assert [(e.text, e.label) for e in got] == [("great", "1"), ("awful", "0")]


def test_csv_multiline_field_line_numbers(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"two\nlines",1\n,0\n')
    with pytest.raises(DataError, match=r"a.csv:4: empty text in field 'text'"):
        read(tmp_path / "a.csv")


def test_malformed_json_line_named(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "ok", "label": 1}\n{"text": "broken", \n')
    with pytest.raises(DataError, match=r"a.jsonl:2: malformed JSON"):
        read(tmp_path / "a.jsonl")


def test_malformed_json_names_the_line_to_fix(tmp_path):
    # a JSON list whose object is not closed: the parser stops at the next line; the fix is this one's end
    (tmp_path / "a.json").write_text('[\n {"text": "a", "label": 1},\n {"text": "b", "label": 0\n {"text": "c"}\n]\n')
    with pytest.raises(
        DataError, match=r"a.json:3: malformed JSON \(Expecting ',' delimiter after this line \(at line 4\)"
    ):
        read(tmp_path / "a.json")
    # a JSON Lines row left open: said as such, not as column 1 of a line after it
    (tmp_path / "b.jsonl").write_text('{"text": "ok", "label": 1}\n{"text": "b", "label": 0\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: malformed JSON \(.* at the end: a value is left open"):
        read(tmp_path / "b.jsonl")
    (tmp_path / "c.jsonl").write_text('{"text": "b" "label": 0}\n')  # elsewhere: the parser's column
    with pytest.raises(DataError, match=r"c.jsonl:1: malformed JSON \(Expecting ',' delimiter at column 14\)"):
        read(tmp_path / "c.jsonl")


def test_wrong_column_count_named(tmp_path):
    (tmp_path / "a.tsv").write_text("text\tlabel\nfine\t1\nnot fine\t0\textra\n")
    with pytest.raises(DataError, match=r"a.tsv:3: expected 2 columns, found 3"):
        read(tmp_path / "a.tsv")


def test_missing_field_lists_what_the_row_has(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"sentence": "ok", "label": 1}\n')
    with pytest.raises(DataError, match=r"a.jsonl:1: missing text field 'text' \(the row has: sentence, label\)"):
        read(tmp_path / "a.jsonl")


def test_folder_reader_labels_by_subfolder(tmp_path):
    for label, texts in {"sport": ["goal!", "match"], "tech": ["chips"]}.items():
        (tmp_path / "d" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (tmp_path / "d" / label / f"{i}.txt").write_text(text)
    got = read(tmp_path / "d")
    assert sorted((e.text, e.label) for e in got) == [("chips", "tech"), ("goal!", "sport"), ("match", "sport")]


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "a.xml").write_text("<x/>")
    with pytest.raises(DataError, match="cannot tell the format"):
        read(tmp_path / "a.xml")
    with pytest.raises(DataError, match="nothere.jsonl: data file not found"):
        read(tmp_path / "nothere.jsonl")


def test_collecting_problems_reports_every_row(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": ""}\n{"label": 1}\nnot json\n{"text": "ok", "label": 0}\n')
    problems = Problems(collect=True)
    got = read_text_examples(DataSource(path=str(tmp_path / "a.jsonl")), DataConfig(), problems)
    assert len(got) == 1 and len(problems.items) == 3
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in problems.items] == ["1", "2", "3"]


def test_paragraphs_reader_splits_documents_on_blank_lines(tmp_path):
    from lmforge.data.readers import READERS, Problems, ReadOptions

    path = tmp_path / "docs.txt"
    path.write_text("first doc line one\nline two\n\n\n second doc\n\nthird\n")
    rows = list(READERS.get("paragraphs")(path, ReadOptions(), Problems()))
    assert [r["text"] for _, r in rows] == ["first doc line one\nline two", " second doc", "third"]
    assert [w for w, _ in rows] == [f"{path}:1", f"{path}:5", f"{path}:7"]

"""Reading NER data: CoNLL columns, People's Daily word/POS lines, scheme detection and repair."""

from lmforge.config.schema import DataConfig, DataSource
from lmforge.data.readers import Problems
from lmforge.data.tagged import ReadStats, read_tagged


def test_conll_tabs_spaces_docstart_and_tag_column(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\t\n北 NN B-LOC\n", encoding="utf-8")
    got = read_tagged(str(path), DataConfig(), Problems())
    assert [ex.tokens for ex in got] == [["EU", "rejects"], ["北"]]
    assert [ex.tags for ex in got] == [["B-ORG", "O"], ["B-LOC"]]
    assert got[0].where.endswith("a.txt:3")
    untagged = read_tagged(str(path), DataConfig(fields={"tag_column": 1}), Problems(), need_tags=False)
    assert untagged[0].tags is None and untagged[0].tokens == ["EU", "rejects"]
    problems = Problems(collect=True)
    read_tagged(str(path), DataConfig(fields={"tag_column": 1}), problems)
    assert len(problems.items) == 2
    assert problems.items[0] == (
        f"{path}:3: invalid tag 'NNP': expected 'O' or B-, I-, E- or S- followed by an entity type, e.g. 'B-PER'"
    )


def test_iob1_is_detected_repaired_and_converted(tmp_path):
    path = tmp_path / "iob1.conll"
    path.write_text("John I-PER\nvisited O\nNew I-LOC\nYork I-LOC\nParis B-LOC\n", encoding="utf-8")
    stats = ReadStats()
    [ex] = read_tagged(str(path), DataConfig(), Problems(), stats=stats)
    assert stats.scheme == "iob1"
    assert ex.tags == ["B-PER", "O", "B-LOC", "I-LOC", "B-LOC"]
    stats = ReadStats()
    [ex] = read_tagged(str(path), DataConfig(tag_scheme="bio", output_scheme="iobes"), Problems(), stats=stats)
    assert stats.repaired_tags == 2 and stats.repaired_sentences == 1
    assert ex.tags == ["S-PER", "O", "B-LOC", "E-LOC", "S-LOC"]


def test_peoples_daily_words_become_tagged_characters(tmp_path):
    path = tmp_path / "pd.txt"
    path.write_text("中共中央/nt  总书记/n  江/nr  泽民/nr  在/p  北京/ns  。/w\n", encoding="utf-8")
    [ex] = read_tagged(DataSource(path=str(path), format="peoples_daily"), DataConfig(), Problems())
    assert "".join(ex.tokens) == "中共中央总书记江泽民在北京。"
    assert ex.tags == [
        "B-ORG",
        "I-ORG",
        "I-ORG",
        "I-ORG",
        "O",
        "O",
        "O",
        "B-PER",
        "I-PER",
        "I-PER",
        "O",
        "B-LOC",
        "I-LOC",
        "O",
    ]


def test_offset_and_limit_count_sentences(tmp_path):
    path = tmp_path / "s.conll"
    path.write_text("-DOCSTART- O\n\n" + "".join(f"w{i} O\nParis B-LOC\n\n" for i in range(6)), encoding="utf-8")
    read = lambda **kw: read_tagged(DataSource(path=str(path), **kw), DataConfig(), Problems())  # noqa: E731
    assert [ex.tokens[0] for ex in read()] == [f"w{i}" for i in range(6)]
    assert [ex.tokens[0] for ex in read(offset=2, limit=3)] == ["w2", "w3", "w4"]
    assert [ex.tokens[0] for ex in read(limit=1)] == ["w0"]
    rows = tmp_path / "s.jsonl"
    rows.write_text("".join('{"tokens": ["t%d"], "tags": ["O"]}\n' % i for i in range(4)), encoding="utf-8")
    got = read_tagged(DataSource(path=str(rows), offset=3), DataConfig(), Problems())
    assert [ex.tokens for ex in got] == [["t3"]]


def test_conll_sentences_are_running_text_for_language_models(tmp_path):
    from lmforge.data.examples import read_text_examples

    path = tmp_path / "ner.txt"
    path.write_text("中\tB-LOC\n国\tI-LOC\n人\tO\n\nEU\tB-ORG\nrejects\tO\nit\tO\n", encoding="utf-8")
    got = read_text_examples(DataSource(path=str(path), format="conll"), DataConfig(), Problems(), False)
    assert [ex.text for ex in got] == ["中国人", "EU rejects it"]
    assert got[1].where.endswith("ner.txt:5") and got[0].label is None
    problems = Problems(collect=True)
    assert (
        read_text_examples(
            DataSource(path=str(path), format="conll"), DataConfig(fields={"token_column": 3}), problems, False
        )
        == []
    )
    assert "no token column 3" in problems.items[0]

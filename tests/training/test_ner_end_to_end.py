"""End-to-end NER: train from CoNLL / token JSONL / span JSONL, eval, predict spans, resume files."""

import json
import random
from pathlib import Path

import pytest

from conftest import SHARED_DATA, TINY_MODEL, write_jsonl

PEOPLE = [["John", "Smith"], ["Mary"], ["Li", "Wei"], ["Anna", "Berg"], ["Omar"]]
PLACES = [["Paris"], ["New", "York"], ["Berlin"], ["Cape", "Town"], ["Lima"]]
TEMPLATES = [
    ["{P}", "visited", "{L}", "on", "Monday", "."],
    ["{P}", "lives", "in", "{L}", "."],
    ["In", "{L}", ",", "{P}", "said", "hello", "."],
    ["Nobody", "came", "."],
]


def ner_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens, tags = [], []
        for slot in rng.choice(TEMPLATES):
            if slot in ("{P}", "{L}"):
                words, kind = (rng.choice(PEOPLE), "PER") if slot == "{P}" else (rng.choice(PLACES), "LOC")
                tokens += words
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            else:
                tokens.append(slot)
                tags.append("O")
        out.append((tokens, tags))
    return out


def write_conll(path: Path, sentences) -> Path:
    lines = ["-DOCSTART- O", ""]
    for tokens, tags in sentences:
        lines += [f"{t} {g}" for t, g in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def to_span_rows(sentences) -> list[dict]:
    from lmforge.data.tagging import to_spans

    rows = []
    for tokens, tags in sentences:
        text, starts = "", []
        for t in tokens:
            starts.append(len(text) + (1 if text else 0))
            text = f"{text} {t}" if text else t
        entities = [
            {"start": starts[s], "end": starts[e - 1] + len(tokens[e - 1]), "label": kind}
            for kind, s, e in to_spans(tags, "bio")
        ]
        rows.append({"text": text, "entities": entities})
    return rows


def ner_overrides(train, dev, output, *extra):
    config = Path(output).parent / f"{Path(output).name}.yaml"
    config.write_text("task: token_classification\n")
    return [
        str(config),
        f"data.train={train}",
        f"data.validation={dev}",
        f"model={TINY_MODEL}",
        "train.epochs=6",
        "train.batch_size=8",
        "train.lr=5e-3",
        "train.warmup=0",
        f"output={output}",
        *extra,
    ]


@pytest.fixture
def ner_files(tmp_path):
    return {
        "train": write_conll(tmp_path / "train.conll", ner_sentences(48, 0)),
        "dev": write_conll(tmp_path / "dev.txt", ner_sentences(16, 1)),
        "dir": tmp_path,
    }


# LoRA: the last step evaluates the model with the adapters folded in (and the CRF), as saved
@pytest.mark.parametrize(("crf", "method"), [(False, "full"), (True, "full"), (True, "lora")])
def test_conll_train_eval_predict(ner_files, run_cli, tmp_path, crf, method):
    out = tmp_path / f"run-{crf}-{method}"
    extra = (f"head.crf={str(crf).lower()}", f"tuning.method={method}") + (
        ("train.lr=2e-2",) if method == "lora" else ()
    )
    code, stdout, err = run_cli("train", "--quiet", *ner_overrides(ner_files["train"], ner_files["dev"], out, *extra))
    assert code == 0, err
    for name in (
        "config.yaml",
        "lmforge.json",
        "metrics.jsonl",
        "eval_results.json",
        "predictions.jsonl",
        "report.html",
        "model/model.safetensors",
        "best/config.json",
    ):
        assert (out / name).exists(), name
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["f1"] > 0.8, results
    assert {"PER", "LOC"} == set(results["per_type"])
    html = (out / "report.html").read_text()
    assert "PER" in html and "LOC" in html

    code, stdout, err = run_cli("eval", str(out), "--data", str(ner_files["dev"]), "--json")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["f1"] == pytest.approx(results["f1"])
    assert metrics["loss"] == pytest.approx(results["loss"], abs=1e-5)
    assert {"f1", "precision", "recall", "per_type"} <= set(metrics)

    text = "Mary visited New York on Monday ."
    code, stdout, err = run_cli("predict", str(out), "--text", text)
    assert code == 0, err
    row = json.loads(stdout)
    for entity in row["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert 0 < entity["score"] <= 1
    if method == "full":  # LoRA on the tiny model learns less: its case checks the evaluations' parity
        assert {(e["text"], e["label"]) for e in row["entities"]} == {("Mary", "PER"), ("New York", "LOC")}

    if crf:
        from transformers import AutoModelForTokenClassification

        from lmforge.inference.predictor import RunPredictor
        from lmforge.models.crf_head import find_crf

        plain = AutoModelForTokenClassification.from_pretrained(out / "model")  # plain transformers loads it
        assert find_crf(plain) is None
        assert find_crf(RunPredictor(out).model).transitions.abs().sum() > 0


def test_span_jsonl_and_token_jsonl(ner_files, run_cli, tmp_path):
    sentences = ner_sentences(48, 0)
    train = write_jsonl(tmp_path / "spans.jsonl", to_span_rows(sentences))
    dev = write_jsonl(tmp_path / "tokens.jsonl", [{"tokens": t, "tags": g} for t, g in ner_sentences(16, 1)])
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--quiet", *ner_overrides(train, dev, out, "data.output_scheme=iobes"))
    assert code == 0, err
    meta = json.loads((out / "lmforge.json").read_text())
    assert "S-PER" in meta["labels"]["names"] and meta["head_options"]["scheme"] == "iobes"
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["f1"] > 0.8
    inputs = write_jsonl(
        tmp_path / "in.jsonl", [{"tokens": ["Omar", "lives", "in", "Lima", "."]}, {"tokens": ["Nobody", "came", "."]}]
    )
    code, stdout, err = run_cli("predict", str(out), "--input", str(inputs))
    assert code == 0, err
    first, second = [json.loads(line) for line in stdout.splitlines()]
    assert first["entities"][0]["start_token"] == 0 and first["entities"][0]["label"] == "PER"
    assert second["entities"] == []


@pytest.mark.parametrize(
    "name,path,limit", [("conll2003", "conll2003/train.txt", 40), ("msra", "msra_ner/dev.txt", 40)]
)
def test_real_data_sets_few_dozen_sentences(run_cli, tmp_path, name, path, limit):
    source = SHARED_DATA / path
    if not source.is_file():
        pytest.skip(f"{source} not present")
    blocks = source.read_text(encoding="utf-8").split("\n\n")
    blocks = [b for b in blocks if b.strip() and not b.startswith("-DOCSTART-")]
    train = tmp_path / "train.txt"
    train.write_text("\n\n".join(blocks[:limit]) + "\n", encoding="utf-8")
    dev = tmp_path / "dev.txt"
    dev.write_text("\n\n".join(blocks[limit : limit + 12]) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--quiet", *ner_overrides(train, dev, out, "train.epochs=1", "data.on_error=skip"))
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert 0 <= results["f1"] <= 1 and 0 < results["count"] <= 12


def test_bilstm_crf_from_scratch(ner_files, run_cli, tmp_path):
    out = tmp_path / "lstm"
    code, _, err = run_cli(
        "train",
        "--quiet",
        *ner_overrides(
            ner_files["train"],
            ner_files["dev"],
            out,
            "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200}",
            "head.crf=true",
            "train.lr=2e-2",
        ),
    )
    assert code == 0, err
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["model"]["family"] == "lstm"
    assert json.loads((out / "eval_results.json").read_text())["validation"]["f1"] > 0.8
    code, stdout, err = run_cli("predict", str(out), "--text", "Omar lives in Lima .")
    assert code == 0, err
    assert {(e["text"], e["label"]) for e in json.loads(stdout)["entities"]} == {("Omar", "PER"), ("Lima", "LOC")}


ZH_PEOPLE, ZH_PLACES = ["张伟", "王芳", "李娜", "刘洋", "陈静"], ["北京", "上海", "广州", "深圳", "成都"]
ZH_TEMPLATES = ["{P}去{L}了。", "{P}住在{L}。", "在{L}，{P}说你好。", "今天没有人来。"]


def zh_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        template = rng.choice(ZH_TEMPLATES)
        chars, tags = [], []
        for piece in template.replace("{P}", "\0P\0").replace("{L}", "\0L\0").split("\0"):
            if piece in ("P", "L"):
                word, kind = (rng.choice(ZH_PEOPLE), "PER") if piece == "P" else (rng.choice(ZH_PLACES), "LOC")
                chars += list(word)
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(word) - 1)
            else:
                chars += list(piece)
                tags += ["O"] * len(piece)
        out.append((chars, tags))
    return out


ZH_LSTM = "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200, lowercase: false, %s}"


def zh_files(tmp_path) -> tuple[Path, Path]:
    """Chinese train (48 sentences) and dev (16) files in CoNLL columns."""
    return (
        write_conll(tmp_path / "train.txt", zh_sentences(48, 0)),
        write_conll(tmp_path / "dev.txt", zh_sentences(16, 1)),
    )


def test_bilstm_crf_with_lexicon_chinese(run_cli, tmp_path):
    train, dev = zh_files(tmp_path)
    lexicon = tmp_path / "words.txt"
    lexicon.write_text(
        "".join(f"{w} 10 nr\n" for w in ZH_PEOPLE)
        + "".join(f"{w} 10 ns\n" for w in ZH_PLACES)
        + "你好 5 l\n今天 5 t\n",
        encoding="utf-8",
    )
    model = (
        "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200, lowercase: false, "
        f"lexicon: {lexicon}}}"
    )
    out = tmp_path / "lex"
    code, _, err = run_cli("train", "--quiet", *ner_overrides(train, dev, out, model, "head.crf=true", "train.lr=2e-2"))
    assert code == 0, err
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["lexicon_words"] == 12 and saved["lexicon_tags"] == ["nr", "ns", "l", "t"]
    assert json.loads((out / "eval_results.json").read_text())["validation"]["f1"] > 0.8
    # The lexicon travels with the weights: predict needs no word list.
    lexicon.unlink()
    code, stdout, err = run_cli("predict", str(out), "--text", "陈静住在成都。")
    assert code == 0, err
    assert {(e["text"], e["label"], e["start"], e["end"]) for e in json.loads(stdout)["entities"]} == {
        ("陈静", "PER", 0, 2),
        ("成都", "LOC", 4, 6),
    }
    code, _, err = run_cli("train", "--quiet", *ner_overrides(train, dev, tmp_path / "again", model))
    assert code != 0 and "model.lexicon: no such file" in err and len(err.strip().splitlines()) == 1


def test_bilstm_crf_with_jieba_char_vectors(run_cli, tmp_path):
    pytest.importorskip("jieba")
    train, dev = zh_files(tmp_path)
    model = ZH_LSTM % "char_vectors: jieba"
    out = tmp_path / "hmm"
    code, _, err = run_cli("train", "--quiet", *ner_overrides(train, dev, out, model, "head.crf=true", "train.lr=2e-2"))
    assert code == 0, err
    assert json.loads((out / "model" / "config.json").read_text())["char_vectors_width"] > 300  # 2 x 163 HMM states + 1
    validation = json.loads((out / "eval_results.json").read_text())["validation"]
    assert validation["f1"] > 0.8
    # dev uses the same ten names as train: every entity was seen in training
    assert validation["unseen_entities"] == 0 and validation["seen_recall"] > 0.8
    code, stdout, err = run_cli("predict", str(out), "--text", "陈静住在成都。")
    assert code == 0, err
    assert {(e["text"], e["label"], e["start"], e["end"]) for e in json.loads(stdout)["entities"]} == {
        ("陈静", "PER", 0, 2),
        ("成都", "LOC", 4, 6),
    }
    # `lmforge eval` reads the run's training entities back: 赵敏 and 南京 are new names
    new = write_conll(
        tmp_path / "new.txt",
        [
            (list("赵敏去南京了。"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]),
            (list("王芳住在上海。"), ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]),
        ],
    )
    code, stdout, err = run_cli("eval", str(out), "--data", str(new), "--json")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["unseen_entities"] == 2 and metrics["unseen_share"] == 0.5
    assert metrics["seen_recall"] == 1.0
    code, _, err = run_cli(
        "train",
        "--quiet",
        *ner_overrides(train, dev, tmp_path / "again", model.replace("jieba", str(tmp_path / "none.vec"))),
    )
    assert code != 0 and "model.char_vectors: no such file" in err and len(err.strip().splitlines()) == 1


def test_partial_labels_keep_a_type_another_source_leaves_unmarked(run_cli, tmp_path):
    """A source that marks people but not places (its places are tagged O) teaches a model that places
    are O; with `incomplete_types: [LOC]` its O tokens may be places, and places are found."""
    complete = write_conll(tmp_path / "complete.txt", zh_sentences(24, 0))
    people_only = write_conll(
        tmp_path / "people.txt",
        [(chars, [t if t.endswith("PER") else "O" for t in tags]) for chars, tags in zh_sentences(48, 2)],
    )
    dev = write_conll(tmp_path / "dev.txt", zh_sentences(16, 1))
    model = "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200, lowercase: false}"
    loc_f1 = {}
    for partial in (True, False):
        source = f"{{path: {people_only}, incomplete_types: [LOC]}}" if partial else str(people_only)
        out = tmp_path / f"partial_{partial}"
        code, _, err = run_cli(
            "train",
            *ner_overrides(
                f"[{complete}, {source}]",
                dev,
                out,
                model,
                "head.crf=true",
                "train.lr=3e-2",
                "train.epochs=10",
                "train.threads=1",
            ),
        )
        assert code == 0, err
        assert ("partial labels: O tokens of 48 training sentences may be LOC" in err) == partial, err
        loc_f1[partial] = json.loads((out / "eval_results.json").read_text())["validation"]["per_type"]["LOC"]["f1"]
    assert loc_f1[True] > 0.8 and loc_f1[False] < loc_f1[True] - 0.3, loc_f1


@pytest.mark.parametrize(
    "segmenter, logged, last_tag",
    [
        ("jieba", "jieba's part-of-speech segmentation, 54 tags", "other"),
        ("[jieba, thulac]", "jieba's + thulac's part-of-speech segmentation, 83 tags", "thulac:other"),
    ],
)
def test_bilstm_crf_with_segmenter_features(run_cli, tmp_path, segmenter, logged, last_tag):
    """Segmenter features trained, saved (the tags name the segmenters), reloaded by predict and eval
    with nothing but the JSON on stdout (THULAC prints when it loads)."""
    pytest.importorskip("jieba")
    if "thulac" in segmenter:
        pytest.importorskip("thulac")
    train, dev = zh_files(tmp_path)
    model = ZH_LSTM % f"segmenter: {segmenter}"
    out = tmp_path / "seg"
    code, _, err = run_cli(
        "train", *ner_overrides(train, dev, out, model, "head.crf=true", "train.lr=2e-2", "train.threads=1")
    )
    assert code == 0, err
    assert f"segmenter features: {logged}" in err
    assert json.loads((out / "model" / "config.json").read_text())["segmenter_tags"][-1] == last_tag
    assert json.loads((out / "eval_results.json").read_text())["validation"]["f1"] > 0.8
    code, stdout, err = run_cli("predict", str(out), "--text", "陈静住在成都。")
    assert code == 0, err
    assert {(e["text"], e["label"]) for e in json.loads(stdout)["entities"]} == {("陈静", "PER"), ("成都", "LOC")}
    code, stdout, err = run_cli("eval", str(out), "--data", str(dev), "--json")
    assert code == 0, err
    assert json.loads(stdout)["f1"] > 0.8
    for bad, message in (
        (model.replace(f"segmenter: {segmenter}", "segmenter: hanlp"), "model.segmenter"),
        (model.replace(f"segmenter: {segmenter}", "segmenter: [jieba, jieba]"), "a segmenter is named twice"),
        (model.replace("family: lstm", "family: transformer"), "model.segmenter applies to the lstm family only"),
    ):
        code, _, err = run_cli("train", "--quiet", *ner_overrides(train, dev, tmp_path / "bad", bad))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_segmenter_that_is_not_installed_fails_before_training(run_cli, tmp_path, monkeypatch):
    import sys

    train, dev = zh_files(tmp_path)
    monkeypatch.setitem(sys.modules, "thulac", None)  # import thulac now raises ImportError
    out = tmp_path / "nothulac"
    code, _, err = run_cli("train", "--quiet", *ner_overrides(train, dev, out, ZH_LSTM % "segmenter: [jieba, thulac]"))
    assert code != 0 and "pip install thulac" in err and "model.segmenter: thulac" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (out / "model").exists()


def test_self_training_predict_peoples_daily_then_train_on_the_predictions(run_cli, tmp_path):
    """`predict --input-format peoples_daily` tags unlabelled word/pos text (its POS tags are not read);
    the output is a training file as it stands, so a second model learns from the first's tags."""
    train, dev = zh_files(tmp_path)
    model = ZH_LSTM % "bigram_buckets: 0"
    teacher = tmp_path / "teacher"
    code, _, err = run_cli(
        "train",
        "--quiet",
        *ner_overrides(train, dev, teacher, model, "head.crf=true", "train.lr=2e-2", "train.threads=1"),
    )
    assert code == 0, err
    unlabelled = tmp_path / "plain.txt"
    sentences = zh_sentences(40, 5)
    # The POS tags deliberately say nothing (x): only the teacher's tags can mark the names.
    unlabelled.write_text(
        "".join("  ".join(f"{c}/x" for c in chars) + "\n" for chars, _ in sentences), encoding="utf-8"
    )
    pseudo = tmp_path / "pseudo.jsonl"
    code, _, err = run_cli(
        "predict", str(teacher), "--input", str(unlabelled), "--input-format", "peoples_daily", "--output", str(pseudo)
    )
    assert code == 0, err
    rows = [json.loads(line) for line in pseudo.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40 and all(r["tokens"] == chars for r, (chars, _) in zip(rows, sentences))
    agree = sum(r["tags"] == tags for r, (_, tags) in zip(rows, sentences))
    assert agree >= 36, agree
    names = {e["text"] for r in rows for e in r["entities"]}
    assert names & set(ZH_PEOPLE + ZH_PLACES) and not any(" " in n for n in names), names
    student = tmp_path / "student"
    code, _, err = run_cli(
        "train",
        "--quiet",
        *ner_overrides(pseudo, dev, student, model, "head.crf=true", "train.lr=2e-2", "train.threads=1"),
    )
    assert code == 0, err
    assert json.loads((student / "eval_results.json").read_text())["validation"]["f1"] > 0.8
    code, _, err = run_cli("predict", str(teacher), "--input", str(unlabelled), "--input-format", "yaml")
    assert code == 2 and "unknown data format 'yaml'" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("predict", str(teacher), "--text", "陈静住在成都。", "--input-format", "conll")
    assert code == 2 and "--input-format reads --input FILE" in err and len(err.strip().splitlines()) == 1, err
    malformed = tmp_path / "malformed.txt"
    malformed.write_text("陈/x  静/x\nno slash here\n", encoding="utf-8")
    code, _, err = run_cli(
        "predict",
        str(teacher),
        "--input",
        str(malformed),
        "--input-format",
        "peoples_daily",
        "--output",
        str(pseudo),
        "--overwrite",
    )
    assert code == 2 and f"{malformed}:2: expected word/pos" in err, err
    assert len(pseudo.read_text(encoding="utf-8").splitlines()) == 40  # the earlier output is intact

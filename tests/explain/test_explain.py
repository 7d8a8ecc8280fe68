"""lmforge explain: captum attributions for classification (transformer, LSTM, n-gram), NER entities
and generated text, checked against what each method means; deletion curves; bad input."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from served import runs  # noqa: E402,F401  (fixture: tiny classification, NER and chat runs)

from conftest import sentiment_rows, write_jsonl  # noqa: E402
from lmforge.cli.main import main  # noqa: E402
from lmforge.explain.classify import ClassificationExplainer  # noqa: E402
from lmforge.explain.entities import EntityExplainer  # noqa: E402
from lmforge.inference.predictor import RunPredictor  # noqa: E402

TEXT = "a gripping , beautifully acted film"


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """A BiLSTM and an n-gram sentiment run (seconds each)."""
    root = tmp_path_factory.mktemp("explain")
    train = write_jsonl(root / "train.jsonl", sentiment_rows(48, 0))
    out = {}
    models = {
        "lstm": "{family: lstm, layers: 1, hidden: 16, embedding: 16, vocab_size: 200}",
        "ngram": "{family: ngram, classifier: logreg, word_ngrams: [1, 2], char_ngrams: [2, 3], min_df: 1}",
    }
    for name, model in models.items():
        config = root / f"{name}.yaml"
        config.write_text("task: classification\n")
        code = main(
            [
                "train",
                "--quiet",
                str(config),
                f"data.train={train}",
                f"model={model}",
                "train.epochs=3",
                "train.batch_size=8",
                "train.lr=1e-2",
                f"output={root / name}",
            ]
        )
        assert code == 0
        out[name] = root / name
    out["dev"] = write_jsonl(root / "dev.jsonl", sentiment_rows(24, 1))
    return out


def cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_integrated_gradients_add_up_to_the_change_in_probability(runs):
    """Completeness: the attributions sum to p(text) - p(baseline of padding), the baseline keeping
    [CLS] and [SEP]; and the predicted label is the one predict gives."""
    predictor = RunPredictor(runs["sentiment"], device="cpu")
    explainer = ClassificationExplainer(predictor)
    a = explainer.explain(TEXT, method="integrated_gradients", steps=200)
    assert a.target == a.extra["label"] == predictor.predict([TEXT])[0]["label"]
    enc = explainer.encode(TEXT)
    ids, special = enc["ids"], enc["special"]
    baseline = torch.where(special, ids, torch.full_like(ids, predictor.tokenizer.pad_token_id))
    index = explainer.labels.index(a.target)
    with torch.no_grad():
        change = explainer.probabilities(ids)[0, index] - explainer.probabilities(baseline)[0, index]
    assert sum(a.scores) == pytest.approx(float(change), abs=2e-3)
    assert a.extra["convergence_delta"] < 2e-3
    assert "".join(t.replace("##", "") for t in a.tokens) == TEXT.replace(" ", "")
    assert all(TEXT[s:e].lower() == t.replace("##", "") for (s, e), t in zip(a.offsets, a.tokens))


def test_occlusion_is_the_fall_when_a_token_becomes_padding(runs):
    explainer = ClassificationExplainer(RunPredictor(runs["sentiment"], device="cpu"))
    a = explainer.explain(TEXT, method="occlusion", target="neg")
    enc = explainer.encode(TEXT)
    ids = enc["ids"]
    with torch.no_grad():
        whole = explainer.probabilities(ids)[0, explainer.labels.index("neg")]
        for k, position in enumerate([i for i, s in enumerate(enc["special"][0].tolist()) if not s]):
            changed = ids.clone()
            changed[0, position] = explainer.tokenizer.pad_token_id
            fall = whole - explainer.probabilities(changed)[0, explainer.labels.index("neg")]
            assert a.scores[k] == pytest.approx(float(fall), abs=1e-5)
    assert a.target == "neg"


def test_attention_method_reads_the_first_tokens_row(runs, tmp_path):
    explainer = ClassificationExplainer(RunPredictor(runs["sentiment"], device="cpu"))
    a = explainer.explain(TEXT, method="attention")
    maps = a.maps["attention"]
    assert maps.shape[:2] == (2, 2)  # the tiny BERT: 2 layers, 2 heads
    assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:3]), atol=1e-4)  # rows are distributions
    assert a.scores == pytest.approx(maps[-1].mean(0)[0, 1:-1].tolist(), abs=1e-6)


def test_cli_json_output_file_and_html(runs, tmp_path, capsys):
    run = str(runs["sentiment"])
    code, out, _ = cli(capsys, "explain", run, "--text", TEXT, "--text", "the jokes fall flat", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == [TEXT, "the jokes fall flat"]
    assert rows[0]["method"] == "integrated_gradients" and rows[0]["label"] in ("pos", "neg")
    assert [t["token"] for t in rows[1]["tokens"]][:2] == ["the", "jokes"]
    html = tmp_path / "e.html"
    output = tmp_path / "e.jsonl"
    code, out, _ = cli(
        capsys,
        "explain",
        run,
        "--input",
        str(runs["sentiment"].parent / "dev.jsonl"),
        "--limit",
        "3",
        "--method",
        "attention",
        "--output",
        str(output),
        "--html",
        str(html),
    )
    assert code == 0 and "3 explanations written" in out
    assert len(output.read_text().splitlines()) == 3
    page = html.read_text()
    assert page.count("<section>") == 3 and "data:image/png;base64," in page and "http" not in page.split("<body>")[1]
    code, out, _ = cli(capsys, "explain", run, "--text", TEXT, "--color", "always")
    assert code == 0 and "\x1b[48;2;" in out and "predicted" in out


def test_faithfulness_prints_deletion_curves(runs, capsys):
    dev = str(runs["sentiment"].parent / "dev.jsonl")
    code, out, _ = cli(capsys, "explain", str(runs["sentiment"]), "--input", dev, "--faithfulness", "--json")
    assert code == 0
    curves = json.loads(out)
    assert curves["texts"] == 16 and curves["fractions_removed"][0] == 0 and curves["fractions_removed"][-1] == 1
    ours, rand = curves["probability_attributed_order"], curves["probability_random_order"]
    assert ours[0] == pytest.approx(rand[0]) and ours[-1] == pytest.approx(rand[-1])  # same text, same empty text
    assert curves["aopc_attributed"] > curves["aopc_random"]  # the model reads its keywords
    code, out, _ = cli(capsys, "explain", str(runs["sentiment"]), "--input", dev, "--faithfulness", "--limit", "4")
    assert code == 0 and "comprehensiveness (AOPC)" in out and "4 texts" in out


def test_lstm_and_ngram_runs(other_runs, capsys):
    code, out, _ = cli(capsys, "explain", str(other_runs["lstm"]), "--text", TEXT, "--json")
    assert code == 0
    row = json.loads(out)
    assert len(row["tokens"]) == 6 and abs(sum(t["attribution"] for t in row["tokens"])) > 0
    predictor = RunPredictor(other_runs["ngram"], device="cpu")
    a = ClassificationExplainer(predictor).explain(TEXT, method="occlusion")
    assert a.tokens == TEXT.split()
    index = predictor.labels.names.index(a.target)
    whole, shorter = predictor.model.probabilities([TEXT, "a , beautifully acted film"])[:, index].tolist()
    assert a.scores[1] == pytest.approx(whole - shorter, abs=1e-5)  # "gripping" left out
    features = a.extra["features"]
    assert features and all(f["contribution"] == pytest.approx(f["value"] * f["weight"], abs=1e-5) for f in features)
    assert {"gripping", "beautifully"} & {f["feature"] for f in features if f["kind"] == "word"}
    code, out, _ = cli(capsys, "explain", str(other_runs["ngram"]), "--text", TEXT)
    assert code == 0 and ("word 'gripping'" in out or "word 'beautifully'" in out)
    code, out, _ = cli(capsys, "explain", str(other_runs["ngram"]), "--input", str(other_runs["dev"]), "--faithfulness")
    assert code == 0 and "occlusion" in out


def test_ner_explains_each_entity(runs, capsys):
    predictor = RunPredictor(runs["ner"], device="cpu")
    text = "John Smith lives in Paris"
    entities = predictor.predict_entities(texts=[text])[0]["entities"]
    assert entities, "the tiny NER run finds entities in its own kind of sentence"
    found = EntityExplainer(predictor).explain(text)
    assert [a.extra["entity"]["text"] for a in found] == [e["text"] for e in entities]
    assert found[0].tokens == text.split() and len(found[0].scores) == 5
    code, out, _ = cli(capsys, "explain", str(runs["ner"]), "--text", text, "--entity", entities[0]["text"], "--json")
    assert code == 0 and json.loads(out)["entity"]["text"] == entities[0]["text"]
    code, _, err = cli(capsys, "explain", str(runs["ner"]), "--text", text, "--entity", "Nobody")
    assert code != 0 and "--entity 'Nobody'" in err and "found:" in err


def test_generation_attributes_prompt_tokens(runs, capsys):
    code, out, _ = cli(
        capsys, "explain", str(runs["chat"]), "--text", "what is 2 plus 3", "--target", " 5", "--json", "--steps", "8"
    )
    assert code == 0
    row = json.loads(out)
    assert row["generated"] == " 5" and row["target"] == " 5"
    assert "".join(t["token"] for t in row["tokens"]).replace(" ", "") == "whatis2plus3"
    assert len(row["token_attributions"]) == len(row["output_tokens"]) >= 1
    assert all(len(r) == len(row["tokens"]) for r in row["token_attributions"])
    code, out, _ = cli(capsys, "explain", str(runs["chat"]), "--text", "what is 1 plus 1", "--method", "occlusion")
    assert code == 0 and "continuation" in out


def test_bad_input_is_one_line(runs, other_runs, tmp_path, capsys):
    run = str(runs["sentiment"])
    for argv, message in [
        (["--text", TEXT, "--target", "maybe"], "--target maybe: not a label of this run (labels: neg, pos)"),
        (["--text", TEXT, "--input", "x.jsonl"], "give --text (one or more) or --input FILE, not both"),
        (["--text", TEXT, "--faithfulness"], "--faithfulness: give --input FILE"),
        (["--input", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
    ]:
        code, _, err = cli(capsys, "explain", run, *argv)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(capsys, "explain", str(other_runs["lstm"]), "--text", TEXT, "--method", "attention")
    assert code != 0 and "--method attention: not available" in err
    code, _, err = cli(capsys, "explain", str(other_runs["ngram"]), "--text", TEXT, "--method", "integrated_gradients")
    assert code != 0 and "choose from occlusion" in err

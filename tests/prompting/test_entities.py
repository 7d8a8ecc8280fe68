"""Zero/few-shot NER by prompting: the strict parser on malformed replies, placement on English and
Chinese tokens, the templates, and an end-to-end ``lmforge prompt`` run on a token_classification
config (a real tiny chat model; and the same run with replies fixed to the gold entities, which must
score F1 1.0 through the whole path)."""

import json
import sys
from pathlib import Path

import pytest

from lmforge.prompting.entities import EntityTemplate, ParseStats, parse_reply, place

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from served import runs  # noqa: E402,F401  (fixture: a tiny chat SFT run among others)
from test_ner_end_to_end import ner_sentences, write_conll  # noqa: E402

TYPES = ["LOC", "MISC", "ORG", "PER"]


def test_parser_keeps_what_it_can_and_counts_the_rest():
    stats = ParseStats()
    reply = (
        'PER: Barack Obama\n- LOC: Paris\nPerson: Angela Merkel\n1. org: "the UN"\nDATE: Monday\n'
        "Here are the entities I found\nPER: Barack Obama\nnone\n\nMISC: none"
    )
    found = parse_reply(reply, TYPES, stats)
    assert found == [("PER", "Barack Obama"), ("LOC", "Paris"), ("PER", "Angela Merkel"), ("ORG", "the UN")]
    assert (stats.unknown_type, stats.unparseable, stats.replies) == (1, 1, 1)
    assert parse_reply("", TYPES) == [] and parse_reply("none", TYPES) == []
    assert parse_reply("PER：张三\nLOC: 北京", ["LOC", "ORG", "PER"]) == [("PER", "张三"), ("LOC", "北京")]
    assert parse_reply(":::\n\u0000\nPER:", TYPES) == []  # junk never raises


def test_placement_tags_every_occurrence_on_token_edges():
    tokens = ["Barack", "Obama", "visited", "Paris", "and", "paris", ",", "New", "York", "Times", "."]
    stats = ParseStats()
    spans = place(
        [
            ("LOC", "Paris"),
            ("PER", "Barack  Obama"),
            ("LOC", "New York"),
            ("ORG", "New York Times"),
            ("LOC", "Par"),
            ("PER", "Merkel"),
        ],
        tokens,
        " ",
        stats,
    )
    # exact case wins over the lower-case 'paris'; the longer ORG takes 'New York'; 'Par' is no token edge
    assert spans == [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 7, 10)]
    assert stats.not_in_text == 3  # New York (overlap), Par, Merkel
    assert place([("LOC", "PARIS")], ["Paris", "is", "nice"], " ") == [("LOC", 0, 1)]  # any case, as a fallback


def test_placement_on_chinese_characters():
    tokens = list("张三在北京大学读书，后来去了北京。")
    spans = place([("ORG", "北京大学"), ("LOC", "北京"), ("PER", "张 三")], tokens, "")
    assert spans == [("PER", 0, 2), ("ORG", 3, 7), ("LOC", 14, 16)]


def test_templates_show_examples_as_turns_and_blocks():
    template = EntityTemplate(["LOC", "PER"])
    turns = template.messages("Anna is in Lima .", [("Omar came .", [("PER", "Omar")]), ("Nobody came .", [])])
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert "LOC (location), PER (person)" in turns[0]["content"] and turns[1]["content"] == "PER: Omar"
    assert turns[3]["content"] == "none" and turns[4]["content"] == "Text: Anna is in Lima ."
    doc = template.document("Anna is in Lima .", [("Omar came .", [("PER", "Omar")])])
    assert doc.endswith("Text: Anna is in Lima .\nEntities:") and "Entities:\nPER: Omar" in doc
    assert EntityTemplate(["PER"], "zh").answer([]) == "无"


def _ner_config(tmp_path, model) -> Path:
    train = write_conll(tmp_path / "train.conll", ner_sentences(24, 0))
    dev = write_conll(tmp_path / "dev.conll", ner_sentences(12, 1))
    config = tmp_path / "ner_prompt.yaml"
    config.write_text(
        "task: token_classification\n"
        f"data: {{train: {train}, validation: {dev}}}\n"
        f"prompt: {{model: '{model}', shots: 2, selection: balanced, max_new_tokens: 12, seed: 3}}\n"
    )
    return config


@pytest.mark.slow
def test_ner_prompt_run_is_scored_and_read_back_by_eval(tmp_path, run_cli, runs):
    config = _ner_config(tmp_path, runs["chat"])
    out = tmp_path / "run"
    code, stdout, err = run_cli("prompt", str(config), f"output={out}", "--quiet")
    assert code == 0, err
    assert "entity F1" in stdout
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["count"] == 12 and 0 <= results["f1"] <= 1 and set(results["per_type"]) <= {"LOC", "PER"}
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["task"] == "token_classification" and meta["prompt"]["shots"] == 2
    assert meta["prompt"]["parse"]["replies"] == 12 and len(meta["prompt"]["examples"]) == 2
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all("reply" in r and len(r["pred"]) == len(r["tokens"]) for r in rows)
    assert "entity" in (out / "report.html").read_text().lower()
    code, stdout, err = run_cli("eval", str(out), "--data", str(tmp_path / "dev.conll"), "--json")
    assert code == 0, err
    assert json.loads(stdout)["f1"] == results["f1"]  # greedy: the same replies again


@pytest.mark.slow
def test_gold_replies_score_f1_one_through_the_whole_path(tmp_path, run_cli, runs, monkeypatch):
    from lmforge.prompting import ner_run

    gold = {" ".join(tokens): tags for tokens, tags in ner_sentences(12, 1)}

    def replies(self, texts):  # what a perfect model would answer, in the template's format
        out = []
        for text in texts:
            tokens, tags = text.split(" "), gold[text]
            from lmforge.data.tagging import to_spans

            out.append(self.template.answer([(t, " ".join(tokens[s:e])) for t, s, e in to_spans(tags)]))
        return out

    monkeypatch.setattr(ner_run.PromptTagger, "replies", replies)
    config = _ner_config(tmp_path, runs["chat"])
    code, _, err = run_cli("prompt", str(config), f"output={tmp_path / 'gold'}", "--quiet")
    assert code == 0, err
    results = json.loads((tmp_path / "gold" / "eval_results.json").read_text())["validation"]
    assert results["f1"] == 1.0 and results["token_accuracy"] == 1.0 and results["entities"] > 0


def test_similarity_is_refused_for_ner(tmp_path, run_cli):
    config = _ner_config(tmp_path, "minilm")
    code, _, err = run_cli("prompt", str(config), f"output={tmp_path / 'x'}", "--method", "similarity")
    assert code == 2 and "prompt.method" in err and not (tmp_path / "x").exists()

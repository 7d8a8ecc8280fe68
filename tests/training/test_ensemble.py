"""Ensembles: the merged tag path is the best valid one under the mean posteriors; runs that cannot
be combined are refused in one line; an end-to-end ensemble of two tiny taggers and classifiers."""

import itertools
import json

import pytest
import torch

from conftest import write_jsonl
from lmforge.data.tagging import allowed_transitions
from lmforge.inference.ensemble import decode_posteriors

NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_decoding_takes_the_best_valid_path_of_the_mean_posteriors():
    start, trans, end = allowed_transitions(NAMES, "bio")
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4):
        for _ in range(5):
            mean = torch.rand(n, len(NAMES), generator=gen).softmax(-1)
            [path] = decode_posteriors([mean], NAMES, "bio")
            valid = [
                p
                for p in itertools.product(range(len(NAMES)), repeat=n)
                if start[p[0]] and end[p[-1]] and all(trans[a][b] for a, b in zip(p, p[1:]))
            ]
            best = max(valid, key=lambda p: sum(mean[t, y].log().item() for t, y in enumerate(p)))
            assert tuple(path) == best
    # the per-word argmax "O I-PER" is invalid; the merged path never is
    mean = torch.tensor([[0.9, 0.05, 0.0, 0.05, 0.0], [0.3, 0.1, 0.6, 0.0, 0.0]])
    assert [NAMES[t] for t in decode_posteriors([mean], NAMES, "bio")[0]] == ["O", "O"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny NER runs (different seeds, heads and tag schemes) and one classification run."""
    from test_ner_end_to_end import ner_sentences, write_conll

    from lmforge.cli.main import main

    folder = tmp_path_factory.mktemp("ensemble")
    train = write_conll(folder / "train.conll", ner_sentences(48, 0))
    dev = write_conll(folder / "dev.conll", ner_sentences(16, 1))
    model = "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200}"
    out = {}
    for name, extra in (
        ("crf", ["head.crf=true", "train.seed=1"]),
        ("softmax", ["train.seed=2"]),
        ("iobes", ["head.crf=true", "train.seed=3", "data.output_scheme=iobes"]),
    ):
        config = folder / f"{name}.yaml"
        config.write_text("task: token_classification\n")
        assert (
            main(
                [
                    "train",
                    "--quiet",
                    str(config),
                    f"data.train={train}",
                    f"data.validation={dev}",
                    model,
                    "train.epochs=4",
                    "train.lr=2e-2",
                    "train.threads=1",
                    f"output={folder / name}",
                    *extra,
                ]
            )
            == 0
        )
        out[name] = folder / name
    rows = [
        {"text": f"{'good great' if i % 2 else 'bad awful'} {i}", "label": "pos" if i % 2 else "neg"} for i in range(24)
    ]
    write_jsonl(folder / "cls.jsonl", rows)
    config = folder / "cls.yaml"
    config.write_text("task: classification\n")
    assert (
        main(
            [
                "train",
                "--quiet",
                str(config),
                f"data.train={folder / 'cls.jsonl'}",
                f"data.validation={folder / 'cls.jsonl'}",
                model,
                "train.epochs=3",
                "train.lr=1e-2",
                "train.threads=1",
                f"output={folder / 'cls'}",
            ]
        )
        == 0
    )
    out.update(cls=folder / "cls", dev=dev, cls_data=folder / "cls.jsonl")
    return out


def test_ner_ensemble_reports_itself_and_each_member(runs, run_cli):
    code, stdout, err = run_cli(
        "eval", str(runs["crf"]), "--ensemble", str(runs["softmax"]), "--data", str(runs["dev"]), "--json"
    )
    assert code == 0, err
    metrics = json.loads(stdout)
    assert [m["run"] for m in metrics["members"]] == [str(runs["crf"]), str(runs["softmax"])]
    # each member alone scores what `lmforge eval` gives it
    for member in metrics["members"]:
        code, alone, err = run_cli("eval", member["run"], "--data", str(runs["dev"]), "--json")
        assert code == 0, err
        assert member["f1"] == pytest.approx(json.loads(alone)["f1"])
    assert {"f1", "precision", "recall", "per_type", "loss"} <= set(metrics)
    assert metrics["f1"] >= min(m["f1"] for m in metrics["members"]) - 0.1
    code, stdout, err = run_cli(
        "eval", str(runs["crf"]), "--ensemble", str(runs["softmax"]), "--data", str(runs["dev"])
    )
    assert code == 0 and "an ensemble of 2 runs" in stdout and f"member {runs['softmax']}: f1" in stdout


def test_classification_ensemble_of_a_run_with_itself_is_the_run(runs, run_cli):
    code, alone, err = run_cli("eval", str(runs["cls"]), "--data", str(runs["cls_data"]), "--json")
    assert code == 0, err
    code, both, err = run_cli(
        "eval", str(runs["cls"]), "--ensemble", str(runs["cls"]), "--data", str(runs["cls_data"]), "--json"
    )
    assert code == 0, err
    alone, both = json.loads(alone), json.loads(both)
    for key in ("accuracy", "macro_f1", "loss"):
        assert both[key] == pytest.approx(alone[key], abs=1e-6), key


def test_runs_that_cannot_be_combined_are_refused(runs, run_cli):
    code, _, err = run_cli("eval", str(runs["crf"]), "--ensemble", str(runs["cls"]), "--data", str(runs["dev"]))
    assert code == 2 and "cannot join an ensemble of token_classification runs" in err
    assert len(err.strip().splitlines()) == 1, err


def test_predict_with_an_ensemble(runs, run_cli):
    text = "Omar lives in Lima ."
    code, alone, err = run_cli("predict", str(runs["crf"]), "--text", text)
    assert code == 0, err
    code, both, err = run_cli("predict", str(runs["crf"]), "--ensemble", str(runs["softmax"]), "--text", text)
    assert code == 0, err
    entities = json.loads(both)["entities"]
    assert all(text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in entities)
    # a run with itself predicts the labels and probabilities it predicts alone
    code, alone, err = run_cli("predict", str(runs["cls"]), "--text", "good great 99", "--text", "bad awful 98")
    assert code == 0, err
    code, both, err = run_cli(
        "predict", str(runs["cls"]), "--ensemble", str(runs["cls"]), "--text", "good great 99", "--text", "bad awful 98"
    )
    assert code == 0, err
    for a, b in zip(alone.splitlines(), both.splitlines()):
        a, b = json.loads(a), json.loads(b)
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-6)


@pytest.mark.parametrize("name", ["crf", "softmax"])
def test_decoding_with_the_word_probabilities_at_hand_is_decoding_without(runs, name):
    from lmforge.config.schema import DataConfig, DataSource
    from lmforge.data.readers import Problems
    from lmforge.data.tagged import read_tagged
    from lmforge.inference.predictor import RunPredictor

    p = RunPredictor(str(runs[name]))
    examples = read_tagged(DataSource(path=str(runs["dev"])), DataConfig(), Problems(), need_tags=False)
    features = p.task.encode(p.tokenizer, examples, p.max_length)
    scores = p.task.word_scores(p.model, p.tokenizer, features, examples, 8, p.device)
    paths, confidence = p.task.decode(p.model, scores)
    again, at_hand = p.task.decode(p.model, scores, p.task.word_probabilities(p.model, scores))
    assert again == paths
    assert all(torch.allclose(a, b) for a, b in zip(confidence, at_hand))
    # a bias moves the decision, not the confidence: that stays the model's own tag probability
    from lmforge.tasks.ner_decoding import entity_bias_row

    probs = p.task.word_probabilities(p.model, scores)
    biased, conf = p.task.decode(p.model, scores, bias=entity_bias_row(p.labels.names, 8.0))
    assert biased != paths
    for q, path, c in zip(probs, biased, conf):
        assert torch.allclose(c, q[torch.arange(len(path)), torch.tensor(path)], atol=1e-5)


def test_an_entity_bias_turns_a_close_o_into_an_entity():
    mean = torch.tensor([[0.55, 0.45, 0.0, 0.0, 0.0], [0.6, 0.0, 0.4, 0.0, 0.0]])
    assert [NAMES[t] for t in decode_posteriors([mean], NAMES, "bio")[0]] == ["O", "O"]
    assert [NAMES[t] for t in decode_posteriors([mean], NAMES, "bio", bias=0.5)[0]] == ["B-PER", "I-PER"]
    assert decode_posteriors([mean], NAMES, "bio", bias=-2.0)[0] == [0, 0]


def test_cross_validated_bias_scores_each_half_with_the_bias_of_the_other():
    from lmforge.data.tagged import TaggedExample
    from lmforge.tasks.ner_decoding import cross_validate_bias

    # even sentences need a bias to find their entity; odd ones would lose theirs to a large one
    names = NAMES
    examples, means = [], []
    for i in range(8):
        examples.append(TaggedExample(["a", "b"], ["B-PER", "O"], tag_ids=[1, 0], where=f"line {i}"))
        p = 0.45 if i % 2 == 0 else 0.7
        means.append(torch.tensor([[1 - p, p, 0.0, 0.0, 0.0], [0.9, 0.0, 0.1, 0.0, 0.0]]))

    def decode(b, idx):
        paths = decode_posteriors([means[i] for i in idx], names, "bio", b)
        return paths, [torch.ones(len(p)) for p in paths]

    paths, confidence, record = cross_validate_bias(decode, examples, names, "bio")
    assert len(paths) == len(confidence) == 8 and all(p is not None for p in paths)
    even, odd = record["folds"]
    assert even["tuned_on"] == "even sentences" and even["bias"] > 0.2 and even["tuned_f1"] == 1.0
    assert even["held_out_f1"] == 1.0  # the even-tuned bias decodes the odd half
    # the odd half needs no bias, so its choice (the smallest) loses the even half's entities: the
    # cross-validated paths show it rather than the bias tuned on everything
    assert odd["bias"] == 0.0 and odd["held_out_f1"] == 0.0
    assert [paths[i] for i in range(0, 8, 2)] == [[0, 0]] * 4 and [paths[i] for i in range(1, 8, 2)] == [[1, 0]] * 4
    assert record["no_bias_f1"] < 1.0 and record["whole_data_f1"] == 1.0 and record["whole_data_bias"] == 0.25


def test_eval_tunes_the_entity_bias_and_predict_takes_one(runs, run_cli):
    for extra in ([], ["--ensemble", str(runs["softmax"])]):
        code, stdout, err = run_cli(
            "eval", str(runs["crf"]), *extra, "--data", str(runs["dev"]), "--tune-entity-bias", "--json"
        )
        assert code == 0, err
        metrics = json.loads(stdout)
        tuning = metrics["entity_bias"]
        assert [f["tuned_on"] for f in tuning["folds"]] == ["even sentences", "odd sentences"]
        assert tuning["whole_data_f1"] >= tuning["no_bias_f1"]
        assert 0.0 <= metrics["f1"] <= 1.0
        code, stdout, err = run_cli("eval", str(runs["crf"]), *extra, "--data", str(runs["dev"]), "--tune-entity-bias")
        assert code == 0 and "held-out f1" in stdout and "cross-validated" in stdout, err
    # a large bias makes every word an entity: recall can only rise, precision falls
    code, plain, err = run_cli("eval", str(runs["softmax"]), "--data", str(runs["dev"]), "--json")
    code, biased, err = run_cli(
        "eval", str(runs["softmax"]), "--data", str(runs["dev"]), "--json", "--entity-bias", "8"
    )
    assert code == 0, err
    plain, biased = json.loads(plain), json.loads(biased)
    assert biased["recall"] >= plain["recall"] and biased["entity_bias"] == {"bias": 8.0}
    code, stdout, err = run_cli("predict", str(runs["crf"]), "--text", "Omar lives in Lima .", "--entity-bias", "8")
    assert code == 0, err
    assert all(t != "O" for t in json.loads(stdout)["tags"])
    code, _, err = run_cli("eval", str(runs["cls"]), "--data", str(runs["cls_data"]), "--entity-bias", "1")
    assert code == 2 and "only token_classification runs decode tags" in err
    for bad, says in (
        (["--entity-bias", "nan"], "give a finite number"),
        (["--entity-bias", "1", "--tune-entity-bias"], "not both"),
    ):
        code, _, err = run_cli("eval", str(runs["crf"]), "--data", str(runs["dev"]), *bad)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_bio_and_iobes_members_mix_in_bio(runs, run_cli):
    from lmforge.inference.ensemble import EnsemblePredictor, _member_tags
    from lmforge.inference.predictor import RunPredictor

    both = []
    for first, second in (("crf", "iobes"), ("iobes", "crf")):
        code, stdout, err = run_cli(
            "eval", str(runs[first]), "--ensemble", str(runs[second]), "--data", str(runs["dev"]), "--json"
        )
        assert code == 0, err
        metrics = json.loads(stdout)
        # each member, its tags read in BIO, scores what it scores alone in its own scheme
        for member in metrics["members"]:
            code, alone, err = run_cli("eval", member["run"], "--data", str(runs["dev"]), "--json")
            assert code == 0, err
            assert member["f1"] == pytest.approx(json.loads(alone)["f1"])
        both.append(metrics)
    # the mean does not depend on the order, nor does the BIO decision
    for key in ("f1", "precision", "recall", "loss"):
        assert both[0][key] == pytest.approx(both[1][key], abs=1e-6), key
    # an IOBES member's posteriors, read in BIO: S-X adds to B-X, E-X to I-X, each word still sums to 1
    iobes = RunPredictor(str(runs["iobes"]))
    assert iobes.task.scheme == "iobes"
    ensemble = EnsemblePredictor([iobes, RunPredictor(str(runs["crf"]))])
    assert ensemble.task.scheme == "bio" and iobes.task.scheme == "iobes"
    names = ensemble.labels.names
    from lmforge.config.schema import DataConfig, DataSource
    from lmforge.data.readers import Problems
    from lmforge.data.tagged import read_tagged

    examples = read_tagged(DataSource(path=str(runs["dev"])), DataConfig(), Problems(), need_tags=False)[:4]
    _, _, probs = _member_tags(iobes, examples, names, 8, own=False)
    features = iobes.task.encode(iobes.tokenizer, examples, iobes.max_length)
    raw = iobes.task.word_probabilities(
        iobes.model, iobes.task.word_scores(iobes.model, iobes.tokenizer, features, examples, 8, iobes.device)
    )
    own = iobes.labels.names
    for q, r in zip(probs, raw):
        assert torch.allclose(q.sum(-1), torch.ones(len(q)), atol=1e-5)
        for name in names:
            if name == "O":
                parts = ["O"]
            else:
                prefix, type_ = name.split("-", 1)
                parts = [name, f"{'S' if prefix == 'B' else 'E'}-{type_}"]
            expected = sum(r[:, own.index(n)] for n in parts)
            assert torch.allclose(q[:, names.index(name)], expected, atol=1e-6), name
    # predict and the entity bias go through the BIO view
    text = "Omar lives in Lima ."
    code, stdout, err = run_cli("predict", str(runs["iobes"]), "--ensemble", str(runs["crf"]), "--text", text)
    assert code == 0, err
    row = json.loads(stdout)
    assert all(not t.startswith(("S-", "E-")) for t in row["tags"])
    assert all(text[e["start"] : e["end"]] == e["text"] for e in row["entities"])
    code, stdout, err = run_cli(
        "predict", str(runs["iobes"]), "--ensemble", str(runs["crf"]), "--text", text, "--entity-bias", "8"
    )
    assert code == 0, err
    assert all(t != "O" for t in json.loads(stdout)["tags"])


def test_schemes_that_do_not_map_word_by_word_are_refused():
    from types import SimpleNamespace

    from lmforge.data.tagging import tag_set
    from lmforge.errors import ModelError
    from lmforge.inference.ensemble import check_members

    def member(scheme, types=("LOC", "PER")):
        names = tag_set(types, scheme)
        return SimpleNamespace(
            record=SimpleNamespace(task="token_classification"),
            one_pass=False,
            labels=SimpleNamespace(names=names),
            task=SimpleNamespace(scheme=scheme),
            run=SimpleNamespace(path=f"runs/{scheme}-{len(types)}"),
        )

    check_members([member("bio"), member("iobes")])
    with pytest.raises(ModelError, match=r"do not mix \(bio, iob1\)"):
        check_members([member("bio"), member("iob1")])
    with pytest.raises(ModelError, match="its entity types \\(LOC, ORG, PER\\) are not"):
        check_members([member("bio"), member("iobes", ("LOC", "ORG", "PER"))])


def test_vote_keeps_the_spans_more_than_half_the_members_predict():
    from collections import Counter

    from lmforge.data.tagging import from_spans, to_spans
    from lmforge.inference.ensemble import vote_paths

    ids = {n: i for i, n in enumerate(NAMES)}
    rows = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "O"], ["B-PER", "O", "O", "B-LOC"]]
    [path], [share] = vote_paths([[[ids[t] for t in r]] for r in rows], NAMES, "bio")
    assert [NAMES[t] for t in path] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert share.tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 2 / 3])
    # two members of four is not more than half; three of four is
    [path], _ = vote_paths([[[ids[t] for t in r]] for r in rows + [["O"] * 4]], NAMES, "bio")
    assert [NAMES[t] for t in path] == ["O"] * 4
    [path], _ = vote_paths([[[ids[t] for t in r]] for r in rows + [["B-PER", "I-PER", "B-LOC", "O"]]], NAMES, "bio")
    assert [NAMES[t] for t in path] == ["B-PER", "I-PER", "O", "O"]
    # random valid taggings: the result is valid and holds exactly the strict-majority spans
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4, 5):
        for _ in range(30):
            length = int(torch.randint(1, 7, (1,), generator=gen))
            members = []
            for _ in range(n):
                spans, j = [], 0
                while j < length:
                    end = min(length, j + int(torch.randint(1, 3, (1,), generator=gen)))
                    if torch.rand(1, generator=gen) < 0.5:
                        spans.append((["PER", "LOC"][int(torch.randint(0, 2, (1,), generator=gen))], j, end))
                    j = end
                members.append([[ids[t] for t in from_spans(spans, length, "bio")]])
            [path], _ = vote_paths(members, NAMES, "bio")
            votes = Counter(s for m in members for s in to_spans([NAMES[t] for t in m[0]], "bio"))
            assert set(to_spans([NAMES[t] for t in path], "bio")) == {s for s, c in votes.items() if 2 * c > n}


def test_ner_ensemble_votes_on_the_members_own_entities(runs, run_cli):
    from collections import Counter

    from lmforge.inference.ensemble import EnsemblePredictor
    from lmforge.inference.predictor import RunPredictor

    order = ("crf", "softmax", "iobes")
    members = [RunPredictor(str(runs[n])) for n in order]
    words = [(line.split() or [""])[0] for line in runs["dev"].read_text().splitlines()]
    tokens, current = [], []
    for word in words + [""]:
        if word:
            current.append(word)
        elif current:
            tokens.append(current)
            current = []
    ensemble = EnsemblePredictor(members, "vote")
    for bias in (0.0, 2.0):  # the bias reaches every member's own decoding
        ensemble.task.entity_bias = bias
        voted = ensemble.predict_entities(tokens=tokens)
        for m in members:
            m.task.entity_bias = bias
        alone = [m.predict_entities(tokens=tokens) for m in members]
        for i, row in enumerate(voted):
            votes = Counter((e["label"], e["start_token"], e["end_token"]) for a in alone for e in a[i]["entities"])
            assert {(e["label"], e["start_token"], e["end_token"]) for e in row["entities"]} == {
                s for s, c in votes.items() if c >= 2
            }
            assert all(
                e["score"] == pytest.approx(votes[(e["label"], e["start_token"], e["end_token"])] / 3)
                for e in row["entities"]
            )
    code, stdout, err = run_cli(
        "eval",
        str(runs["crf"]),
        "--ensemble",
        str(runs["softmax"]),
        str(runs["iobes"]),
        "--combine",
        "vote",
        "--data",
        str(runs["dev"]),
        "--json",
    )
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["combine"] == "vote" and len(metrics["members"]) == 3
    code, stdout, err = run_cli(
        "eval",
        str(runs["crf"]),
        "--ensemble",
        str(runs["softmax"]),
        str(runs["iobes"]),
        "--combine",
        "vote",
        "--data",
        str(runs["dev"]),
        "--tune-entity-bias",
        "--json",
    )
    assert code == 0, err
    assert json.loads(stdout)["entity_bias"]["whole_data_f1"] >= json.loads(stdout)["entity_bias"]["no_bias_f1"]
    code, stdout, err = run_cli(
        "predict",
        str(runs["crf"]),
        "--ensemble",
        str(runs["softmax"]),
        str(runs["iobes"]),
        "--combine",
        "vote",
        "--text",
        "Omar lives in Lima .",
        "--entity-bias",
        "2",
    )
    assert code == 0, err
    got = json.loads(stdout)
    expected = ensemble.predict_entities(["Omar lives in Lima ."])[0]
    assert (got["entities"], got["tags"]) == (expected["entities"], expected["tags"])


def test_classifiers_vote_for_labels():
    from lmforge.inference.ensemble import combine_classes

    a = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.3, 0.5]])
    b = torch.tensor([[0.55, 0.45, 0.0], [0.1, 0.6, 0.3]])
    c = torch.tensor([[0.0, 0.9, 0.1], [0.4, 0.1, 0.5]])
    assert torch.allclose(combine_classes([a, b, c]), (a + b + c) / 3)
    voted = combine_classes([a, b, c], "vote")
    assert torch.allclose(voted.sum(-1), torch.ones(2))
    # row 0: two votes for label 0 beat the higher mean of label 1 (0.58 against 0.38)
    assert ((a + b + c) / 3)[0].argmax() == 1 and voted[0].argmax() == 0
    assert voted[0, 0].item() == pytest.approx((2 + 0.3833 / 2) / 3.5, abs=1e-3)
    assert voted[1].argmax() == 2  # two of three again
    # one vote each: the members' mean decides
    tie = combine_classes([torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[0.1, 0.8, 0.1]])], "vote")
    assert tie[0].argmax() == 1


def test_classification_vote_from_the_cli(runs, run_cli):
    code, alone, err = run_cli("eval", str(runs["cls"]), "--data", str(runs["cls_data"]), "--json")
    assert code == 0, err
    code, voted, err = run_cli(
        "eval",
        str(runs["cls"]),
        "--ensemble",
        str(runs["cls"]),
        str(runs["cls"]),
        "--combine",
        "vote",
        "--data",
        str(runs["cls_data"]),
        "--json",
    )
    assert code == 0, err
    alone, voted = json.loads(alone), json.loads(voted)
    assert voted["combine"] == "vote" and len(voted["members"]) == 3
    assert voted["accuracy"] == alone["accuracy"]  # three copies of one run agree with it
    code, alone, err = run_cli("predict", str(runs["cls"]), "--text", "good great 99")
    assert code == 0, err
    code, voted, err = run_cli(
        "predict", str(runs["cls"]), "--ensemble", str(runs["cls"]), "--combine", "vote", "--text", "good great 99"
    )
    assert code == 0, err
    alone, voted = json.loads(alone), json.loads(voted)
    # two votes for the label, plus half a vote of its probability, out of two and a half
    assert voted["label"] == alone["label"]
    assert voted["score"] == pytest.approx((2 + alone["score"] / 2) / 2.5, abs=1e-6)


def test_vote_is_refused_where_there_is_nothing_to_vote_on(runs, run_cli):
    for command in (
        ["eval", str(runs["crf"]), "--data", str(runs["dev"])],
        ["predict", str(runs["crf"]), "--text", "Omar ."],
    ):
        code, _, err = run_cli(*command, "--combine", "vote")
        assert code == 2 and "give --ensemble" in err and len(err.strip().splitlines()) == 1, err

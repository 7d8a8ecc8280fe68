"""Example selection is seeded, balanced when asked and nearest-first-last; templates render the
instruction, examples and text in chat and plain form, in English and Chinese."""

import torch

from lmforge.prompting.selection import fixed_examples, nearest_examples
from lmforge.prompting.templates import PromptTemplate, detect_language


def test_balanced_selection_is_even_deterministic_and_seeded():
    labels = [0] * 10 + [1] * 3 + [2] * 1
    chosen = fixed_examples(labels, 6, "balanced", seed=3)
    assert len(chosen) == len(set(chosen)) == 6
    counts = [sum(labels[i] == c for i in chosen) for c in range(3)]
    assert max(counts[:2]) - min(counts[:2]) <= 1 and counts[2] == 1  # as even as the classes allow
    assert fixed_examples(labels, 6, "balanced", seed=3) == chosen
    assert fixed_examples(labels, 6, "balanced", seed=4) != chosen
    assert fixed_examples(labels, 0, "balanced", seed=3) == []
    random_pick = fixed_examples(labels, 5, "random", seed=1)
    assert len(set(random_pick)) == 5 and random_pick == fixed_examples(labels, 5, "random", seed=1)


def test_nearest_examples_put_the_most_similar_last():
    train = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1]]), dim=-1)
    assert nearest_examples(texts, train, 2) == [[2, 0]]


def test_templates_render_chat_and_plain_forms():
    template = PromptTemplate(["bad", "good"], "en")
    turns = template.messages("nice film", [("awful", 0)])
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert (
        "bad, good" in turns[0]["content"]
        and turns[1]["content"] == "bad"
        and turns[2]["content"].endswith("nice film")
    )
    doc = template.document("nice film", [("awful", 0)])
    assert doc.endswith("Text: nice film\nAnswer:") and "Text: awful\nAnswer: bad" in doc
    assert template.answers(chat=False) == [" bad", " good"] and template.answers(chat=True) == ["bad", "good"]
    zh = PromptTemplate(["差评", "好评"], "zh")
    assert "差评、好评" in zh.messages("很好吃", [])[0]["content"] and zh.answers(chat=False) == ["差评", "好评"]
    assert detect_language(["这家店很好", "服务一般", "ok"]) == "zh" and detect_language(["fine", "好"]) == "en"

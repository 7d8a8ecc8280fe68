"""The n-gram family's estimators: Kneser-Ney probabilities (hand-computed), NB-SVM's log-count
ratio, TF-IDF features, CRF word features, and saving without pickles."""

import math

import numpy as np
import pytest

from lmforge.models.ngram.crf_tagger import CrfTagger, short_shape, word_features, word_shape
from lmforge.models.ngram.features import NgramFeatures
from lmforge.models.ngram.kneser_ney import KneserNeyLM, modified_discounts
from lmforge.models.ngram.nbsvm import NbSvmClassifier, log_count_ratio


# -- Kneser-Ney -----------------------------------------------------------------------------------
def bigram_model() -> KneserNeyLM:
    """Documents "a b" and "b", order 2, one discount D = 0.5.

    Encoded: <s> a b </s> and <s> b </s>. Vocabulary by frequency: </s>, <unk>, b (2), a (1).
    Continuation counts a(w) = number of distinct words before w: a: {<s>} -> 1; b: {a, <s>} -> 2;
    </s>: {b} -> 1; <unk>: 0. Sum 4; three types seen, so gamma = 0.5 * 3 / 4 = 0.375 and the
    uniform share is 0.375 / |V| = 0.375 / 4 = 0.09375:
        P1(a) = (1 - .5)/4 + .09375 = 0.21875      P1(b) = (2 - .5)/4 + .09375 = 0.46875
        P1(</s>) = 0.21875                         P1(<unk>) = 0.09375       (sum 1)
    """
    return KneserNeyLM(order=2, discount=0.5).fit([["a", "b"], ["b"]])


def test_kneser_ney_unigram_level_matches_hand_computed():
    lm = bigram_model()
    assert lm.vocabulary_ == ["</s>", "<unk>", "b", "a"]
    unigram = {w: lm.probability("", lm.index_[w]) for w in lm.vocabulary_}
    assert unigram == pytest.approx({"a": 0.21875, "b": 0.46875, "</s>": 0.21875, "<unk>": 0.09375})


def test_kneser_ney_bigram_matches_hand_computed():
    """Context b: followed by </s> twice; total 2, gamma = 0.5 * 1 / 2 = 0.25:
        P(</s>|b) = (2 - .5)/2 + .25 * .21875 = 0.8046875     P(a|b) = .25 * .21875 = 0.0546875
        P(b|b) = .25 * .46875 = 0.1171875                      P(<unk>|b) = .25 * .09375 = 0.0234375
    Context <s>: a once, b once; total 2, gamma = 0.5 * 2 / 2 = 0.5:
        P(a|<s>) = .5/2 + .5 * .21875 = 0.359375               P(b|<s>) = .25 + .5 * .46875 = 0.484375
    Context a: b once; total 1, gamma 0.5:  P(b|a) = .5 + .5 * .46875 = 0.734375
    """
    lm = bigram_model()
    ids = lm.index_
    b, a = chr(ids["b"]), chr(ids["a"])
    assert lm.probability(b, ids["</s>"]) == pytest.approx(0.8046875)
    assert lm.probability(b, ids["a"]) == pytest.approx(0.0546875)
    assert lm.probability(b, ids["b"]) == pytest.approx(0.1171875)
    assert lm.probability(b, ids["<unk>"]) == pytest.approx(0.0234375)
    assert lm.probability(lm.bos_, ids["a"]) == pytest.approx(0.359375)
    assert lm.probability(lm.bos_, ids["b"]) == pytest.approx(0.484375)
    assert lm.probability(a, ids["b"]) == pytest.approx(0.734375)
    # log P("a b") = log P(a|<s>) + log P(b|a) + log P(</s>|b); three tokens scored
    total, tokens, unknown = lm.log_likelihood(["a", "b"])
    assert total == pytest.approx(math.log(0.359375) + math.log(0.734375) + math.log(0.8046875))
    assert (tokens, unknown) == (3, 0)


TOY = [
    s.split()
    for s in [
        "the cat sat on the mat",
        "the dog sat on the log",
        "a cat and a dog",
        "the cat saw the dog",
        "on the mat the cat sat",
        "a log on the mat",
    ]
]


@pytest.mark.parametrize("order,discount", [(1, None), (2, None), (3, None), (3, 0.75), (4, 0.3)])
def test_kneser_ney_sums_to_one_for_every_context(order, discount):
    lm = KneserNeyLM(order=order, discount=discount).fit(TOY)
    ids = lm.index_
    contexts = ["the cat", "sat on", "on the", "zebra the", "cat zebra", "the", ""]
    for words in contexts:
        history = lm.encode(words.split(), end=False)[-(order - 1) :] if order > 1 else ""
        total = sum(lm.probability(history, w) for w in range(len(lm.vocabulary_)))
        assert total == pytest.approx(1.0, abs=1e-12), words
        assert lm.distribution(history).sum() == pytest.approx(1.0, abs=1e-12)
        assert lm.distribution(history)[ids["cat"]] == pytest.approx(lm.probability(history, ids["cat"]))


def test_sequence_starts_keep_their_counts():
    """Order 3 on "a" and "a b": the bigram (<s>, a) starts at a beginning mark, so it keeps its
    count (2, two documents start with a) instead of a continuation count (1: only <s> precedes it);
    (a, b) gets the continuation count 1."""
    lm = KneserNeyLM(order=3, discount=0.5).fit([["a"], ["a", "b"]])
    ids = lm.index_
    assert lm.tables_[1][lm.bos_] == {ids["a"]: 2}
    assert lm.tables_[1][chr(ids["a"])] == {ids["</s>"]: 1, ids["b"]: 1}


def test_modified_discounts_chen_goodman():
    """n1..n4 = 10, 5, 3, 2: Y = 10 / (10 + 2*5) = 0.5; D1 = 1 - 2*.5*5/10 = 0.5;
    D2 = 2 - 3*.5*3/5 = 1.1; D3+ = 3 - 4*.5*2/3 = 1.6667."""
    from collections import Counter

    assert modified_discounts(Counter({1: 10, 2: 5, 3: 3, 4: 2})) == pytest.approx((0.5, 1.1, 3 - 4 / 3))


def test_kneser_ney_state_round_trip():
    lm = KneserNeyLM(order=3).fit(TOY)
    settings, arrays = lm.state()
    again = KneserNeyLM.from_state(settings, arrays)
    history = lm.encode(["the", "cat"], end=False)[-2:]
    assert np.allclose(again.distribution(history), lm.distribution(history))
    assert again.discounts_ == lm.discounts_


# -- NB-SVM and TF-IDF ------------------------------------------------------------------------------
def test_log_count_ratio_hand_case():
    """Rows {0, 2} (positive), {0, 1} and {1} (negative), alpha 1: p = 1 + [1, 0, 1] = [2, 1, 2]
    (|p| = 5), q = 1 + [1, 2, 0] = [2, 3, 1] (|q| = 6); r = log((p/5) / (q/6)) = log [1.2, 0.4, 2.4]."""
    x = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0]])
    r = log_count_ratio(x, np.array([True, False, False]), alpha=1.0)
    assert r == pytest.approx(np.log([1.2, 0.4, 2.4]))


def test_nbsvm_learns_and_predicts_probabilities():
    texts = ["good fun", "great good", "fun great film", "bad dull", "dull boring", "boring bad film"] * 3
    y = [1, 1, 1, 0, 0, 0] * 3
    features = NgramFeatures(word_ngrams=(1, 1), char_ngrams=None, min_df=1, weighting="binary")
    x = features.fit_transform(texts)
    model = NbSvmClassifier(C=1.0).fit(x, y)
    probs = model.predict_proba(features.transform(["good great", "dull bad"]))
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1)
    assert list(model.predict(features.transform(["good great", "dull bad"]))) == [1, 0]
    # three classes: one ratio and one model per class
    three = NbSvmClassifier().fit(x, [0, 1, 2] * 6)
    assert three.r_.shape == (3, x.shape[1]) and np.allclose(three.predict_proba(x).sum(1), 1)


def test_tfidf_features_match_scikit_learn_and_round_trip():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["the cat sat", "the dog sat down", "a cat", "the cat and the dog"]
    features = NgramFeatures(word_ngrams=(1, 2), char_ngrams=None, min_df=1).fit(texts)
    ours = features.transform(texts).toarray()
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b|[^\w\s]")
    theirs = reference.fit_transform(texts).toarray()
    order = [reference.vocabulary_[t] for t in features.terms_["word"]]
    assert np.allclose(ours, theirs[:, order], atol=1e-6)
    again = NgramFeatures.from_state(*features.state())
    assert np.allclose(again.transform(texts).toarray(), ours)


@pytest.mark.parametrize("weighting", ["tfidf", "binary"])
def test_fitting_returns_the_features_transform_gives(weighting):
    texts = ["the cat sat", "the dog sat down", "a cat", "the cat and the dog", "dogs and cats"]
    fitted = NgramFeatures(word_ngrams=(1, 2), char_ngrams=(2, 4), min_df=2, weighting=weighting)
    x = fitted.fit_transform(texts)  # counts each text once
    assert x.format == "csr" and x.dtype == np.float32
    assert np.array_equal(x.toarray(), fitted.transform(texts).toarray())
    assert fitted.n_features == x.shape[1] and (weighting == "tfidf" or set(x.data) == {1.0})


def test_character_ngrams_read_chinese():
    texts = ["这家酒店很好", "房间很干净", "服务太差了", "非常差的体验"]
    features = NgramFeatures(word_ngrams=None, char_ngrams=(1, 2), min_df=1).fit(texts)
    assert "很好" in features.terms_["char"] and "差" in features.terms_["char"]


# -- CRF features ------------------------------------------------------------------------------------
def test_word_shapes_and_features():
    assert word_shape("Obama-2") == "Xxxxx-d" and short_shape("Obama") == "Xx" and short_shape("1996") == "d"
    feats = word_features(["EU", "rejects", "German", "call"], 0)
    assert {"w=EU", "lw=eu", "u=True", "-1:BOS", "+1:w=rejects", "+2:w=german", "0|+1=eu|rejects"} <= set(feats)


def test_crf_tagger_fits_and_round_trips_through_bytes():
    sentences = [["John", "lives", "in", "Paris"], ["Mary", "visited", "Berlin"], ["He", "left", "."]] * 4
    tags = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O", "B-LOC"], ["O", "O", "O"]] * 4
    crf = CrfTagger(max_iterations=30).fit(sentences, tags)
    assert crf.predict([["John", "visited", "Paris"]]) == [["B-PER", "O", "B-LOC"]]
    again = CrfTagger.from_bytes(crf.get_params(), crf.model_bytes_)
    ((path, marginals),) = again.predict_marginals([["Mary", "lives", "in", "Berlin"]])
    assert path == ["B-PER", "O", "O", "B-LOC"] and all(0 < m <= 1 for m in marginals)
    assert crf.weights_ > 0


def test_generated_words_join_with_spaces_except_between_chinese_characters():
    from lmforge.models.ngram.language_model import _spaced

    assert _spaced("the", "cat") and _spaced("天", "ok")
    assert not _spaced("", "cat") and not _spaced("the cat ", "sat") and not _spaced("天", "气")

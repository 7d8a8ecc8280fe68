"""Adversarial training on the input embeddings (training/adversarial.py): FGM's gradient is the clean
plus the adversarial one (checked by hand), PGD and FreeLB relate to it as their definitions say,
every method changes the loss and leaves the embedding weights bit for bit as they were, on the
transformer and LSTM families, padded and packed batches, LoRA, mixed precision; bad settings fail
naming the key."""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification, BertForTokenClassification

from conftest import tiny_bert_config
from lmforge.config import load_config
from lmforge.config.schema import AdversarialConfig, JobConfig, TuningConfig
from lmforge.data.batching import pad_features
from lmforge.errors import ConfigError
from lmforge.models.family import FAMILIES
from lmforge.models.lstm_encoder import LstmConfig, LstmForSequenceClassification
from lmforge.models.unpadded import enable_unpadded, pack_features
from lmforge.tasks import get_task
from lmforge.training.adversarial import EmbeddingAdversary, _examples, check_adversarial, resolve
from lmforge.training.distributed import make_accelerator
from lmforge.tuning import apply_tuning

LENGTHS = [5, 9, 3, 7]


def _accelerator(precision: str = "no"):
    return make_accelerator(JobConfig.model_validate({"data": {"train": "unused.jsonl"}, "device": "cpu"}), precision)


def _features(labels: bool = True, tokens: bool = False) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    features = []
    for i, n in enumerate(LENGTHS):
        feature: dict = {"input_ids": torch.randint(1, 100, (n,), generator=generator).tolist()}
        if labels:
            feature["label"] = i % 2
        if tokens:
            feature["labels"] = [-100] + [(i + j) % 3 for j in range(n - 2)] + [-100]
        features.append(feature)
    return features


def _bert(seed: int = 0, **extra):
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(num_labels=2, **extra)).train()


def _lstm(seed: int = 0):
    torch.manual_seed(seed)
    config = LstmConfig(vocab_size=100, embedding_size=16, hidden_size=16, num_layers=1, dropout=0.0, num_labels=2)
    return LstmForSequenceClassification(config).train()


def _adversary(model, method: str, acc, family: str = "transformer", task=None, **settings):
    task = task or get_task("classification")
    embeddings = FAMILIES.get(family).input_embeddings(model)
    return EmbeddingAdversary(AdversarialConfig(method=method, **settings), embeddings, task.loss, acc), task


def _micro_step(model, adversary, task, batch, acc, weight: float = 1.0):
    """One micro batch as the loop runs it: the clean pass under ``watching``, then ``backward``.
    Returns (clean loss, adversarial loss) and leaves the gradients in the model."""
    with adversary.watching():
        with acc.autocast():
            loss = task.loss(model, dict(batch))
        acc.backward(loss * weight * adversary.clean_weight)
    perturbed = adversary.backward(model, batch, weight)
    return loss.detach(), perturbed


def _grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# -- FGM against a hand computation ---------------------------------------------------------------
def test_fgm_gradient_is_the_clean_plus_the_adversarial_gradient_by_hand():
    model, acc = _bert(), _accelerator()
    batch = pad_features(_features(), 0)
    adversary, task = _adversary(model, "fgm", acc, epsilon=0.5)
    clean, perturbed = _micro_step(model, adversary, task, batch, acc)
    got = _grads(model)

    # By hand: the embedded tokens x, g = dL/dx, r = epsilon * g / ||g|| (per example), and the
    # parameters' gradients of L(x) and of L(x + r) summed.
    model.zero_grad()
    params = [p for p in model.parameters()]
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    x = model.get_input_embeddings()(ids)  # (B, T, E)
    loss_clean = F.cross_entropy(model(inputs_embeds=x, attention_mask=mask).logits, labels)
    g = torch.autograd.grad(loss_clean, x, retain_graph=True)[0]
    r = 0.5 * g / g.flatten(1).norm(dim=1)[:, None, None]
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((4,), 0.5))
    grads_clean = torch.autograd.grad(loss_clean, params, allow_unused=True)
    x_adv = model.get_input_embeddings()(ids) + r.detach()
    loss_adv = F.cross_entropy(model(inputs_embeds=x_adv, attention_mask=mask).logits, labels)
    grads_adv = torch.autograd.grad(loss_adv, params, allow_unused=True)

    assert clean.item() == pytest.approx(loss_clean.item(), abs=1e-6)
    assert perturbed.item() == pytest.approx(loss_adv.item(), abs=1e-6)
    assert perturbed.item() > clean.item()  # the step goes up the loss
    names = [n for n, _ in model.named_parameters()]
    for name, a, b in zip(names, grads_clean, grads_adv):
        if a is None:
            continue
        assert torch.allclose(got[name], a + b, atol=1e-6), name


# -- every method: a different loss, the weights untouched ----------------------------------------
@pytest.mark.parametrize("family", ["transformer", "lstm"])
@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_each_method_changes_the_loss_and_restores_the_embeddings_exactly(family, method):
    model, acc = (_bert() if family == "transformer" else _lstm()), _accelerator()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    embeddings = model.get_input_embeddings()
    adversary, task = _adversary(model, method, acc, family)
    clean, perturbed = _micro_step(model, adversary, task, pad_features(_features(), 0), acc)

    assert perturbed.item() != clean.item() and perturbed.item() > clean.item()
    assert torch.equal(embeddings.weight, before[next(n for n in before if "embeddings.weight" in n)])
    assert all(torch.equal(p, before[n]) for n, p in model.state_dict().items())
    assert not embeddings._forward_hooks  # nothing left on the model
    assert embeddings.weight.grad is not None and torch.isfinite(embeddings.weight.grad).all()
    # The hook is gone: the model computes the clean loss again, exactly.
    assert task.loss(model, pad_features(_features(), 0)).item() == clean.item()


def test_pgd_with_one_step_of_epsilon_is_fgm_and_freelb_averages_its_points():
    acc, batch = _accelerator(), pad_features(_features(), 0)
    results = {}
    for method, settings in (("fgm", {}), ("pgd", {"steps": 1, "alpha": 1.0}), ("freelb", {"steps": 1, "alpha": 1.0})):
        model = _bert()
        adversary, task = _adversary(model, method, acc, **settings)
        _micro_step(model, adversary, task, batch, acc)
        results[method] = _grads(model)
    for name, grad in results["fgm"].items():
        assert torch.allclose(results["pgd"][name], grad, atol=1e-7), name
        # FreeLB with one step: the mean of the clean and the one perturbed point's gradients
        assert torch.allclose(results["freelb"][name], grad / 2, atol=1e-7), name


def test_pgd_steps_stay_in_the_epsilon_ball_and_raise_the_loss_more_than_one_small_step():
    acc, batch = _accelerator(), pad_features(_features(), 0)
    model = _bert()
    adversary, task = _adversary(model, "pgd", acc, epsilon=1.0, steps=4, alpha=0.6)
    seen = []
    ascend = adversary._ascend

    def recording(delta, grad, groups):
        out = ascend(delta, grad, groups)
        seen.append(groups.norms(out)[:, 0, 0])
        return out

    adversary._ascend = recording
    clean, perturbed = _micro_step(model, adversary, task, batch, acc)
    assert len(seen) == 4
    assert all((n <= 1.0 + 1e-5).all() for n in seen)
    assert torch.allclose(seen[-1], torch.ones(4), atol=1e-5)  # 4 x 0.6 > 1: projected onto the ball
    assert perturbed.item() > clean.item()


def test_the_weight_scales_every_pass_as_the_loop_weighs_micro_batches():
    acc, batch = _accelerator(), pad_features(_features(), 0)
    grads = []
    for weight in (1.0, 0.25):
        model = _bert()
        adversary, task = _adversary(model, "freelb", acc, steps=2)
        _micro_step(model, adversary, task, batch, acc, weight)
        grads.append(_grads(model))
    for name, grad in grads[0].items():
        assert torch.allclose(grads[1][name], grad * 0.25, atol=1e-7), name


# -- batches and models the loop gives it ----------------------------------------------------------
def test_packed_rows_get_the_perturbation_of_the_padded_batch():
    """Norms are per text: a packed row (train.padding_free) is perturbed as its padded batch is,
    so the adversarial loss and the gradients match."""
    acc, features = _accelerator(), _features()
    results = []
    for packed in (False, True):
        model = _bert(attn_implementation="sdpa")
        enable_unpadded(model)
        batch = pack_features([{"input_ids": f["input_ids"]} for f in features]) if packed else None
        if batch is None:
            batch = pad_features(features, 0)
        else:
            batch["labels"] = torch.tensor([f["label"] for f in features])
        adversary, task = _adversary(model, "pgd", acc, steps=2)
        results.append((*_micro_step(model, adversary, task, batch, acc), _grads(model)))
    (clean_a, adv_a, grads_a), (clean_b, adv_b, grads_b) = results
    assert clean_a.item() == pytest.approx(clean_b.item(), abs=1e-5)
    assert adv_a.item() == pytest.approx(adv_b.item(), abs=1e-5)
    for name, grad in grads_a.items():
        assert torch.allclose(grads_b[name], grad, atol=1e-5), name


def test_groups_of_a_packed_row_are_its_texts():
    features = [{"input_ids": [1] * n} for n in LENGTHS]
    batch = pack_features(features)
    x = torch.randn(1, sum(LENGTHS), 6)
    norms = _examples(batch, x).norms(x)[0, :, 0]
    start = 0
    for n in LENGTHS:
        assert torch.allclose(norms[start : start + n], x[0, start : start + n].norm().expand(n))
        start += n


def test_padding_is_never_perturbed():
    model, acc = _bert(), _accelerator()
    batch = pad_features(_features(), 0)
    adversary, task = _adversary(model, "fgm", acc)
    seen = []
    ascend = adversary._ascend
    adversary._ascend = lambda d, g, groups: seen.append(ascend(d, g, groups)) or seen[-1]
    _micro_step(model, adversary, task, batch, acc)
    padding = batch["attention_mask"] == 0
    assert padding.any() and (seen[0][padding] == 0).all()


def test_lora_frozen_embeddings_are_perturbed_and_stay_untouched():
    acc, batch = _accelerator(), pad_features(_features(), 0)
    model = apply_tuning(_bert(), TuningConfig(method="lora", dropout=0.0), "classification")
    embeddings = FAMILIES.get("transformer").input_embeddings(model)
    assert not embeddings.weight.requires_grad
    before = embeddings.weight.detach().clone()
    adversary, task = _adversary(model, "fgm", acc)
    clean, perturbed = _micro_step(model, adversary, task, batch, acc)
    assert perturbed.item() > clean.item()
    assert torch.equal(embeddings.weight, before) and embeddings.weight.grad is None
    both = {n: g for n, g in _grads(model).items() if "lora_B" in n}
    model.zero_grad()
    task.loss(model, dict(batch)).backward()
    clean_only = {n: g for n, g in _grads(model).items() if "lora_B" in n}
    # The adapters (lora_B: lora_A's gradient is zero while B starts at zero) learn from both passes.
    assert both and all(not torch.allclose(both[n], clean_only[n]) for n in both)


def test_bf16_autocast_step_runs_and_restores_the_embeddings():
    acc = _accelerator("bf16")
    try:
        model = _bert()
        before = model.get_input_embeddings().weight.detach().clone()
        adversary, task = _adversary(model, "pgd", acc, steps=2)
        clean, perturbed = _micro_step(model, adversary, task, pad_features(_features(), 0), acc)
        assert torch.isfinite(perturbed) and perturbed.item() != clean.item()
        assert torch.equal(model.get_input_embeddings().weight, before)
    finally:
        _accelerator("no")  # leave accelerate's process-wide precision as the other tests expect


def test_token_classification_with_a_crf_head():
    from lmforge.data.examples import LabelSet
    from lmforge.models.crf_head import attach_crf

    acc = _accelerator()
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(num_labels=3)).train()
    task = get_task("token_classification")
    task.crf = True
    attach_crf(model, LabelSet(["O", "B-X", "I-X"], {}).names, "bio")
    features = [{**f, "heads": list(range(1, len(f["input_ids"]) - 1))} for f in _features(labels=False, tokens=True)]
    batch = task.collate(features, type("T", (), {"pad_token_id": 0})())
    adversary, _ = _adversary(model, "freelb", acc, task=task, steps=2)
    clean, perturbed = _micro_step(model, adversary, task, batch, acc)
    assert torch.isfinite(perturbed) and perturbed.item() > clean.item()


# -- settings ----------------------------------------------------------------------------------------
def test_resolved_settings():
    assert resolve(AdversarialConfig(method="fgm", epsilon=2.0)) == {
        "method": "fgm",
        "epsilon": 2.0,
        "alpha": 2.0,
        "steps": 1,
    }
    assert resolve(AdversarialConfig(method="pgd", epsilon=1.5, steps=3))["alpha"] == pytest.approx(0.5)
    assert resolve(AdversarialConfig(method="freelb", alpha=0.1))["alpha"] == 0.1


DATA = "data.train=train.jsonl"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.adversarial={method: fgx}", "train.adversarial.method: Input should be 'fgm', 'pgd' or 'freelb'"),
        ("train.adversarial={method: fgm, epsilon: 0}", "train.adversarial.epsilon: Input should be greater than 0"),
        ("train.adversarial={method: pgd, epsilon: -1}", "train.adversarial.epsilon: Input should be greater than 0"),
        ("train.adversarial={method: pgd, steps: 0}", "train.adversarial.steps: Input should be greater than or equal"),
        ("train.adversarial={method: freelb, steps: 0}", "train.adversarial.steps: Input should be greater than or"),
        ("train.adversarial={method: fgm, steps: 3}", "train.adversarial.steps: fgm takes one step"),
        ("train.adversarial={method: fgm, alpha: 0.1}", "train.adversarial.alpha: fgm takes one step"),
        ("train.adversarial={epsilon: 1}", "train.adversarial.method: Field required"),
        ("train.adversarial={method: fgm, eps: 1}", "unknown key 'train.adversarial.eps'"),
    ],
)
def test_bad_settings_fail_in_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [DATA, override])
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["task=causal_lm"],
            "train.adversarial: fgm is built for classification, token_classification, not task causal_lm",
        ),
        (["task=seq2seq"], "not task seq2seq"),
        (["model={family: ngram}"], "train.adversarial: the ngram family has no input embeddings to perturb"),
    ],
)
def test_tasks_and_families_without_embeddings_to_perturb_are_refused(overrides, expected):
    config = load_config(None, [DATA, "train.adversarial={method: fgm}", *overrides])
    with pytest.raises(ConfigError) as info:
        check_adversarial(config, get_task(config.task))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_supported_combinations_pass_the_check():
    for task in ("classification", "token_classification"):
        for model in ("minilm", "{family: lstm}"):
            config = load_config(None, [DATA, f"task={task}", f"model={model}", "train.adversarial={method: pgd}"])
            check_adversarial(config, get_task(task))

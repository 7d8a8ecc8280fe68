"""A BERT sequence classifier that reads the sentence embedding: the last hidden states mean-pooled
over the real tokens and L2-normalized (how sentence-transformers pools ``all-MiniLM-L6-v2``, the
bundled ``minilm``), then one linear layer. ``tuning.method: setfit`` trains it (Tunstall et al.,
2022, "Efficient Few-Shot Learning Without Prompts").

A stock ``BertForSequenceClassification`` reads the first token through its pooler, so it cannot
compute this. This class is a ``transformers`` ``PreTrainedModel`` over the stock ``BertModel``
(no pooler), saved as ``config.json`` + ``model.safetensors``; ``config.json`` names the model type
``lmforge_mean_pooled_bert``, which this module registers with transformers' Auto classes
(lmforge's own class, never remote code), so ``lmforge predict``/``eval``/``serve``/``explain`` load
a setfit run as they load any classification run. Plain transformers without lmforge refuses the
folder (unknown model type) rather than silently reading the first token; its body still loads as
``BertModel.from_pretrained(folder)``.
"""

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertPreTrainedModel

from lmforge.models.embedding import mean_pool


class MeanPooledBertConfig(BertConfig):
    """``BertConfig`` under a model type of its own (the head differs, the fields do not)."""

    model_type = "lmforge_mean_pooled_bert"


class MeanPooledBertForSequenceClassification(BertPreTrainedModel):
    """logits = classifier(normalize(mean over real tokens of BertModel's last hidden states))."""

    config_class = MeanPooledBertConfig
    config: MeanPooledBertConfig

    def __init__(self, config: MeanPooledBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def embed(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """(B, T) token ids -> (B, C) unit sentence embeddings."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        return mean_pool(hidden.last_hidden_state, attention_mask)  # (B, C)

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        pooled = mean_pool(out.last_hidden_state, attention_mask)  # (B, C), float32
        logits = self.classifier(pooled.to(self.classifier.weight.dtype))  # (B, labels)
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


def from_bert_classifier(model) -> MeanPooledBertForSequenceClassification:
    """The mean-pooled classifier with the body of a ``BertForSequenceClassification`` (its weights
    copied, the first-token pooler left out; the linear head starts afresh) and the same config."""
    fields = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    config = MeanPooledBertConfig.from_dict(fields)
    config._attn_implementation = model.config._attn_implementation
    pooled = MeanPooledBertForSequenceClassification(config)
    body = {k: v for k, v in model.bert.state_dict().items() if not k.startswith("pooler.")}
    pooled.bert.load_state_dict(body)  # strict: every weight of the body, nothing else
    return pooled.to(model.device)


# transformers' Auto classes read a saved folder's config.json by model type: registering ours (never
# remote code) lets every command load a setfit run as it loads any classification run.
AutoConfig.register(MeanPooledBertConfig.model_type, MeanPooledBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(
    MeanPooledBertConfig, MeanPooledBertForSequenceClassification, exist_ok=True
)

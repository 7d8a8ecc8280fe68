"""Zero- and few-shot classification without training: prompt templates, in-context example
selection, label scoring by verbalizer log-likelihood (with contextual calibration), and zero-shot
similarity with an encoder. No CLI or HTTP in here, so the server can use the same templates."""

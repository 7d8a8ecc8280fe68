"""One router per endpoint group: ``tasks`` (classify, ner, embeddings), ``openai`` (completions,
chat, models) and ``admin`` (health, metrics). Each route parses its request (``protocol``), asks a
service and returns its answer; ``dependencies`` holds what they share."""

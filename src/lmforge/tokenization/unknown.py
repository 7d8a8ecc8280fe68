"""How much of the data a tokenizer cannot read: the unknown-token rate."""


def unknown_rate(tokenizer, token_lists: list[list[int]]) -> float:
    """Fraction of non-special tokens that are the tokenizer's unknown token (0 without one)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return 0.0
    special = set(tokenizer.all_special_ids) - {unk}
    total = hits = 0
    for ids in token_lists:
        for token in ids:
            if token in special:
                continue
            total += 1
            hits += token == unk
    return hits / total if total else 0.0

"""How a sentence longer than ``data.max_length`` is cut into overlapping windows of subwords (on
word boundaries) and which window each word's scores are read from: the one where the word has the
most context on both sides, so no word is dropped and none is counted twice."""


def special_layout(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts (before, after) one sequence ([CLS] / [SEP])."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    return [], []


def windows(word_ids: list, body: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) subword windows of at most ``body`` subwords, overlapping by about ``stride``,
    each starting at the first subword of a word."""
    n = len(word_ids)
    if n <= body:
        return [(0, n)]

    def inside_word(p: int) -> bool:
        return word_ids[p] is not None and word_ids[p] == word_ids[p - 1]

    windows, start = [], 0
    while True:
        end = min(start + body, n)
        windows.append((start, end))
        if end == n:
            return windows
        nxt = back = max(end - stride, start + 1)
        while back > start and inside_word(back):
            back -= 1
        if back > start:
            nxt = back
        else:  # no word starts in the overlap: the next one after it (a word longer than a window is cut)
            while nxt < end and inside_word(nxt):
                nxt += 1
        start = nxt


def owners(word_ids: list, windows: list[tuple[int, int]]) -> dict[int, int | None]:
    """For each word, the window whose edges are farthest from its first subword."""
    first: dict[int, int] = {}
    for pos, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = pos
    owner = {}
    for word, pos in first.items():
        best, margin = None, -1
        for w, (start, end) in enumerate(windows):
            if start <= pos < end and min(pos - start, end - 1 - pos) > margin:
                best, margin = w, min(pos - start, end - 1 - pos)
        owner[word] = best
    return owner

"""Masking text that arrives a piece at a time (a streamed answer): ``StreamMasker`` holds back the
last ``HOLD`` characters, which a span might still be growing into, and any span that crosses that
point, and hands on the rest masked. Each piece is scanned with a little of what came before it as
context (the rules look at their neighbours), so the work stays linear in the text's length."""

from lmforge.masking.mask import Masker

HOLD = 64  # longer than any rule span (an IPv6 address is at most 45 characters)
CONTEXT = 32  # characters already handed on, kept for the rules' look-behind


class StreamMasker:
    def __init__(self, masker: Masker):
        self.masker = masker
        self.raw = ""  # the text not handed on yet, after CONTEXT characters that were
        self.done = 0  # where in ``raw`` the text not handed on starts

    def feed(self, piece: str) -> str:
        """The masked text that is safe to hand on now (maybe empty)."""
        self.raw += piece
        return self._emit(final=False)

    def flush(self) -> str:
        """The rest, masked (at the end of the text)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        spans = [s for s in self.masker.find([self.raw])[0] if s.start >= self.done]
        cut = len(self.raw) if final else max(self.done, len(self.raw) - HOLD)
        for span in spans:
            if span.start < cut < span.end:
                cut = span.start
        pieces, at = [], self.done
        for span in spans:
            if span.end <= cut:
                pieces += [self.raw[at : span.start], self.masker.replacement(span)]
                at = span.end
        pieces.append(self.raw[at:cut])
        keep_from = max(0, cut - CONTEXT)
        self.raw, self.done = self.raw[keep_from:], cut - keep_from
        return "".join(pieces)

"""BiLSTM-CRF training speed on the CPU: lmforge's encoder against the packed-sequence nn.LSTM, in one run.

Both sides train the same character BiLSTM-CRF tagger (the MSRA config: 1 layer, 2x256, embeddings
128, CRF over BIO tags) from the same initial weights on the same batches of MSRA training sentences
(batched as ``lmforge train`` batches them: sentences of similar length together, in random order;
``--no-group-by-length`` mixes lengths in a batch): forward, CRF loss, backward, Adam step. The baseline runs the bidirectional LSTM on packed sequences
(``pack_padded_sequence``), as PyTorch's documentation and most taggers do; lmforge runs it as two
one-direction passes over the padded batch, the backward one over each sentence reversed within its
own length. The two compute the same function: the losses of the first step are printed and must
agree to float precision.

Both sides stay on the CPU: ``--device`` takes ``cpu`` (the default) or ``auto`` (the CPU here) and
refuses CUDA, because on a GPU lmforge's encoder runs packed sequences (cuDNN) itself, so the two
sides would be the same code.

    python bench/lstm_throughput.py --quick     # 40 steps a side
    python bench/lstm_throughput.py             # 200 steps a side

The last line printed is ``ratio: X.XX`` = lmforge sentences/s / packed sentences/s.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from _common import add_device_arg, resolve_device

ROOT = Path(__file__).resolve().parents[1]
CPU_ONLY = "on CUDA lmforge's LSTM encoder runs packed sequences (cuDNN) itself, the baseline's code"
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def sentences(path: Path, max_length: int) -> list[tuple[list[str], list[str]]]:
    out, chars, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            char, tag = line.split()[:2]
            chars.append(char)
            tags.append(tag)
        elif chars:
            out.append((chars[:max_length], tags[:max_length]))
            chars, tags = [], []
    return out


def batches(rows, vocab: dict, batch_size: int, steps: int, seed: int, group_by_length: bool):
    """The first ``steps`` batches of an epoch, drawn as ``lmforge train`` draws them
    (``train.group_by_length``: sentences of similar length batched together, the default)."""
    from lmforge.data.batching import epoch_batches

    for indices in epoch_batches([len(c) for c, _ in rows], batch_size, seed, 0, group_by_length)[:steps]:
        chosen = [rows[i] for i in indices]
        T = max(len(c) for c, _ in chosen)
        ids = torch.zeros(len(chosen), T, dtype=torch.long)
        tags = torch.zeros(len(chosen), T, dtype=torch.long)
        mask = torch.zeros(len(chosen), T, dtype=torch.long)
        for i, (chars, labels) in enumerate(chosen):
            ids[i, : len(chars)] = torch.tensor([vocab.get(c, 1) for c in chars])
            tags[i, : len(chars)] = torch.tensor([TAGS.index(t) for t in labels])
            mask[i, : len(chars)] = 1
        yield ids, tags, mask


def packed_two_pass(encoder):
    """The baseline: the encoder's bidirectional LSTM on packed sequences."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def run(x, lengths):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = encoder.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]

    return run


def train(model, crf, data, lr: float) -> tuple[float, float, int]:
    optimizer = torch.optim.Adam(list(model.parameters()) + list(crf.parameters()), lr=lr)
    first, sentences_seen, start = None, 0, time.perf_counter()
    for ids, tags, mask in data:
        logits = model(ids, mask).logits
        loss = crf(logits, tags, mask.bool())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        first = loss.item() if first is None else first
        sentences_seen += ids.shape[0]
    return time.perf_counter() - start, first, sentences_seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 steps a side")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--no-group-by-length",
        action="store_true",
        help="random batches (train.group_by_length: false) instead of length-grouped ones",
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msra_ner" / "train.txt")
    add_device_arg(parser, cpu_only=CPU_ONLY)
    args = parser.parse_args(argv)
    _, device_label = resolve_device(args.device, cpu_only=CPU_ONLY)
    if not args.data.is_file():
        print(f"error: MSRA train not found at {args.data} (give it with --data)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from lmforge.models.crf import CRF
    from lmforge.models.lstm import LstmConfig, LstmForTokenClassification

    steps = args.steps or (40 if args.quick else 200)
    rows = sentences(args.data, args.max_length)
    chars = sorted({c for chars, _ in rows for c in chars})
    vocab = {c: i + 2 for i, c in enumerate(chars)}  # 0 padding, 1 unknown
    config = LstmConfig(
        vocab_size=len(vocab) + 2, embedding_size=128, hidden_size=256, num_layers=1, dropout=0.5, num_labels=len(TAGS)
    )
    results = {}
    for side in ("packed", "lmforge"):  # the baseline first: no warm cache for lmforge
        torch.manual_seed(args.seed)
        model, crf = LstmForTokenClassification(config).train(), CRF(len(TAGS))
        if side == "packed":
            model.encoder._two_pass = packed_two_pass(model.encoder)
        seconds, first, seen = train(
            model, crf, batches(rows, vocab, args.batch_size, steps, args.seed, not args.no_group_by_length), 3e-3
        )
        results[side] = {"seconds": seconds, "first_loss": first, "sentences_per_s": seen / seconds}
    mean_length = sum(len(c) for c, _ in rows) / len(rows)
    print(
        f"BiLSTM-CRF (1x2x256, embeddings 128, vocabulary {len(vocab) + 2}) on {len(rows):,} MSRA sentences "
        f"(mean length {mean_length:.1f}), {steps} steps of {args.batch_size}, "
        f"{'random' if args.no_group_by_length else 'length-grouped'} batches, {torch.get_num_threads()} thread(s), "
        f"device {device_label}"
    )
    print("| side | sentences/s | seconds | first-step loss |\n|---|---:|---:|---:|")
    for side, name in (("packed", "nn.LSTM on packed sequences"), ("lmforge", "lmforge (two padded passes)")):
        r = results[side]
        print(f"| {name} | {r['sentences_per_s']:.1f} | {r['seconds']:.1f} | {r['first_loss']:.6f} |")
    same = abs(results["packed"]["first_loss"] - results["lmforge"]["first_loss"]) < 1e-4
    print(f"same first-step loss: {'yes' if same else 'NO'}")
    print(f"ratio: {results['lmforge']['sentences_per_s'] / results['packed']['sentences_per_s']:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""Train the bundled demo model: GPT-2's architecture and tokenizer, trained on Jane Austen.

    .venv/bin/pip install torch==2.13.0          # training only; the app never imports torch
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 \
        .venv/bin/python scripts/train_demo_model.py      # RECIPE (scripts/demo_recipe.py), ~75 min

With no options it runs the recipe that trained the committed weights: its phases one after
another, each from the previous one's export, the last written to gpt2_max/assets/austen-gpt2.
``--one-phase`` with any options trains one phase instead (experiments; ``--init`` to continue).

Data: the six novels from Debian's `r-cran-janeaustenr` (scripts/austen_corpus.py), each split
by tokens into its first 95% (training) and last 5% (held out), novels joined with
<|endoftext|>. A share of the training windows (``--copy-share``) holds instead a run of random
token ids written again and again: only copying earlier tokens predicts its repeats, which is the
pressure that makes previous-token and induction heads form in a model this small on this little
text (on Austen alone they had not formed after a few million tokens). The runs are drawn only
from ids with trained rows of their own (below): a run of ids that share one row cannot be copied,
its loss of ~10 nats a token only adds noise, and with it (an earlier recipe) no head formed.
The mix goes through four stages (``stage_table``), each ending at the first evaluation that
shows what it is for (or at its cap of steps): first windows of aligned (a, b, a) triples, whose
last id only attention to the previous token predicts, until a previous-token head starts (aligned,
it can learn to look back at every third position only, which is all they reward: ~0.4); then
triples after random gaps, where looking back pays everywhere, until it is a previous-token head;
then mostly copy runs, which an induction head (a previous-token head's output read by a later
head) predicts; then mostly Austen, with enough of both kept that the heads stay. The head stages
use short windows (``--stage-context``), the last one the full context.

Rows of their own: every id of the training text, and every id below ``OWN_ROWS_BELOW`` (GPT-2's
first 10,000 ids, its most frequent merges, which the induction test draws from); the copy runs
train the ids the text lacks.

Speed on a CPU: the output layer is computed only over the ids with rows of their own plus one
shared row standing for the other ~32k ("compact output"); fp32 (``--bf16`` where the CPU has
bf16 matmuls). glibc returning each step's large buffers to the OS costs a page fault per page on
every step (half the CPU time in the kernel on a fresh VM): keep them, as the command above does
with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000``. The exported ``wte`` is
tied as in GPT-2: every id outside the corpus gets the shared row plus a fixed random row of its
own (so unseen ids, like the induction test's random ids, stay distinct inputs). The training loss
accounts for those rows through their mean and covariance (the second-order cumulant of
log-sum-exp over them), and the script reports the exact full-vocabulary loss of the exported
weights.

Writes ``OUT/config.json``, ``OUT/model.safetensors`` (fp16, Hugging Face's names and Conv1D
layouts) and ``OUT/training.json`` (the curve, the baselines, the head scores, the settings).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from austen_corpus import NOVELS, novels_from_package  # noqa: E402
from demo_recipe import RECIPE, check_recipe_run, parse_arguments, recipe_phases  # noqa: E402

from gpt2_max.attribution import induction_test_ids  # noqa: E402
from gpt2_max.tokenizer import Tokenizer  # noqa: E402

VOCAB = 50257
END_OF_TEXT = 50256
HELD_OUT_SHARE = 0.05
INDUCTION_LENGTH = 25  # the app's induction test: 25 random ids in 1000..9999, repeated once


@dataclass(frozen=True)
class Stage:
    """One part of the training mix: the shares of copy-run and triples windows (the rest of each
    batch is Austen), whether the triples come after random gaps, the window length, the step it
    ends at the latest (None: the end) and the head scores that end it early (None: never); the
    copy runs' lengths and the share of them that are Austen passages (the rest random ids)."""

    name: str
    copy_share: float
    triples_share: float
    triple_gaps: bool
    context: int
    cap: int | None
    done_when: tuple[float, float] | None  # (best previous-token, best induction) both reached
    runs: tuple[int, int] = (8, 64)
    text_share: float = 0.0


def stage_table(args) -> tuple[Stage, ...]:
    short = args.stage_context
    copies = dict(runs=tuple(args.copy_runs), text_share=args.copy_text_share)
    return (
        Stage("previous-token start", 0.0, 0.7, False, short, args.aligned_stage_steps, (STARTED_PREVIOUS, 0.0)),
        Stage(
            "previous-token", 0.3, 0.5, True, short, args.previous_stage_steps, (PREVIOUS_TOKEN_TARGET, 0.0), **copies
        ),
        Stage(
            "induction",
            0.7,
            0.15,
            True,
            short,
            args.induction_stage_steps,
            (PREVIOUS_TOKEN_TARGET, INDUCTION_TARGET),
            **copies,
        ),
        Stage("Austen", args.copy_share, args.triples_share, True, args.context, None, None, **copies),
    )


OWN_ROWS_BELOW = 10_000  # ids below this get trained rows of their own even when the text lacks them
PREVIOUS_TOKEN_TARGET, INDUCTION_TARGET = 0.5, 0.4  # best head scores a kept checkpoint should reach
STARTED_PREVIOUS = 0.3  # a previous-token head on aligned triples (they reward no more than ~0.4)


# --------------------------------------------------------------------------- data


def corpus_ids(work_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) int64 token ids: each novel's first 95% / last 5% of tokens, novels
    separated by <|endoftext|>."""
    tokenizer = Tokenizer()
    novels = novels_from_package(work_dir)
    train, held_out = [], []
    for name in NOVELS:
        ids = tokenizer.encode(novels[name])
        cut = int(len(ids) * (1 - HELD_OUT_SHARE))
        train += ids[:cut] + [END_OF_TEXT]
        held_out += ids[cut:] + [END_OF_TEXT]
    return np.array(train, dtype=np.int64), np.array(held_out, dtype=np.int64)


def copy_window(
    rng: np.random.Generator,
    length: int,
    known: np.ndarray,
    runs: tuple[int, int] = (8, 64),
    text: np.ndarray | None = None,
    text_share: float = 0.0,
) -> np.ndarray:
    """A window of ``length`` ids: a run of ``runs[0]..runs[1]`` ids written over and over, drawn
    uniformly from the ids with rows of their own (``known``), or with probability ``text_share``
    a passage of ``text`` (Austen repeated: tokens whose rows the text trains well)."""
    run = int(rng.integers(runs[0], runs[1] + 1))
    if text is not None and text_share > 0 and rng.random() < text_share:  # (no draw at 0: the same stream)
        start = int(rng.integers(0, len(text) - run))
        ids = text[start : start + run]
    else:
        ids = rng.choice(known, run)
    start = int(rng.integers(0, run))  # the window starts anywhere in the run
    return np.resize(np.roll(ids, -start), length)


def triples_window(rng: np.random.Generator, length: int, known: np.ndarray, gaps: bool = True) -> np.ndarray:
    """A window of ``length`` ids in triples (a, b, a) of random ids, with ``gaps`` each after 0-2
    random ids: a triple's last id is the one two back, which only attention to the previous token
    predicts from the middle one. The random gaps keep a triple's place from being read off the
    position, so the head that helps is one that attends to the previous token everywhere."""
    count = length // 3 + 1
    a, b = rng.choice(known, count), rng.choice(known, count)
    gaps = rng.integers(0, 3, count) if gaps else np.zeros(count, dtype=np.int64)
    pieces = [np.concatenate([rng.choice(known, gap), [x, y, x]]) for x, y, gap in zip(a, b, gaps, strict=True)]
    return np.concatenate(pieces)[:length]


def batch(
    rng,
    train,
    batch_size,
    context,
    copy_share,
    known,
    triples_share=0.0,
    triple_gaps=True,
    runs=(8, 64),
    text_share=0.0,
):
    rows = []
    for _ in range(batch_size):
        draw = rng.random()
        if draw < copy_share:
            rows.append(copy_window(rng, context + 1, known, runs, train, text_share))
        elif draw < copy_share + triples_share:
            rows.append(triples_window(rng, context + 1, known, triple_gaps))
        else:
            start = int(rng.integers(0, len(train) - context - 1))
            rows.append(train[start : start + context + 1])
    rows = torch.from_numpy(np.stack(rows))
    return rows[:, :-1], rows[:, 1:]


# --------------------------------------------------------------------------- model


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.c_attn, self.attn_proj = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.c_fc, self.mlp_proj = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, patterns: list | None = None) -> torch.Tensor:
        B, T, E = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(E, dim=-1)
        q, k, v = (t.view(B, T, self.heads, E // self.heads).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        if patterns is None:
            # No dropout on the pattern: on a CPU it costs as much as the attention itself.
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # explicit softmax, to read the pattern [B, H, T, T]
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            pattern = scores.float().softmax(-1)
            patterns.append(pattern)
            z = pattern.to(v.dtype) @ v
        x = x + F.dropout(self.attn_proj(z.transpose(1, 2).reshape(B, T, E)), self.dropout, self.training)
        h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
        return x + F.dropout(self.mlp_proj(h), self.dropout, self.training)


def sinusoidal_positions(positions: int, width: int, scale: float = 0.02) -> torch.Tensor:
    """[positions, width] sin/cos pairs at geometric frequencies (the Transformer's), scaled to
    about the token rows' size. A start only (the rows are trained): position i - 1 is a fixed
    rotation of position i in every pair, so a head can attend to the previous token with one
    query-key product from the first step, where random rows must first be shaped for it."""
    pairs = width // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(pairs) / pairs)  # [pairs]
    angles = torch.arange(positions)[:, None] * frequencies[None, :]  # [positions, pairs]
    rows = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(positions, 2 * pairs)
    return scale * rows


class CompactGPT2(torch.nn.Module):
    """GPT-2 whose tied embedding is ``known`` rows (the corpus's ids) + one shared row + fixed
    random offsets for every other id."""

    def __init__(self, known: np.ndarray, layers, width, heads, positions, dropout, seed, sinusoidal=False):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("known", torch.from_numpy(known))
        other = np.setdiff1d(np.arange(VOCAB), known)
        self.register_buffer("other", torch.from_numpy(other))
        # id -> row of the compact table: 0..K-1 known ids, K the shared row for the others.
        row_of = torch.full((VOCAB,), len(known), dtype=torch.long)
        row_of[self.known] = torch.arange(len(known))
        self.register_buffer("row_of", row_of)
        # Fixed per-id offsets of the other ids [O, E] (distinct inputs), their mean [E] and covariance [E, E].
        offsets = 0.02 * torch.randn(len(other), width, generator=generator)
        self.register_buffer("offsets", offsets)
        offset_row = torch.full((VOCAB,), -1, dtype=torch.long)
        offset_row[self.other] = torch.arange(len(other))
        self.register_buffer("offset_row", offset_row)
        self.register_buffer("offset_mean", offsets.mean(0))
        self.register_buffer("offset_cov", torch.cov(offsets.T))
        self.wte = torch.nn.Parameter(0.02 * torch.randn(len(known) + 1, width, generator=generator))
        self.wpe = torch.nn.Parameter(
            sinusoidal_positions(positions, width)
            if sinusoidal
            else 0.01 * torch.randn(positions, width, generator=generator)
        )
        self.blocks = torch.nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(width)
        self.dropout = dropout
        for block in self.blocks:  # GPT-2's init: N(0, 0.02), residual projections scaled by depth
            for name, p in block.named_parameters():
                if name.endswith("weight") and p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * layers) if "proj" in name else 0.02
                    torch.nn.init.normal_(p, 0.0, std, generator=generator)
                elif name.endswith("bias"):
                    torch.nn.init.zeros_(p)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.wte[self.row_of[ids]]
        extra = self.offsets[self.offset_row[ids].clamp(min=0)] * (self.offset_row[ids] >= 0).unsqueeze(-1)
        return rows + extra

    def hidden(self, ids: torch.Tensor, patterns: list | None = None) -> torch.Tensor:
        T = ids.shape[1]
        x = F.dropout(self.embed(ids) + self.wpe[:T], self.dropout, self.training)
        for block in self.blocks:
            x = block(x, patterns)
        return self.ln_f(x)

    def group_correction(self, h: torch.Tensor) -> torch.Tensor:
        """[...] log sum_i exp(h . offset_i) over the other ids, to second order in the offsets."""
        return math.log(len(self.other)) + h @ self.offset_mean + 0.5 * ((h @ self.offset_cov) * h).sum(-1)

    def compact_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[B, T, K + 1]: the known ids' logits, then the log-sum-exp of all other ids' logits
        (shared row + log count + the offsets' first two cumulants)."""
        logits = h @ self.wte.T
        correction = self.group_correction(h.float())
        return torch.cat([logits[..., :-1], logits[..., -1:] + correction.unsqueeze(-1).to(logits.dtype)], -1)

    def loss(self, ids, targets):
        """Mean nats/token over the full vocabulary. Cross-entropy over the compact logits is exact
        for a target in the corpus's ids; for another id it is the loss of the whole group, so the
        group's term (shared row + correction) is swapped for that id's own logit (shared row + its
        offset)."""
        h = self.hidden(ids)
        logits = self.compact_logits(h)
        rows = self.row_of[targets]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), rows.flatten(), reduction="none").view_as(targets)
        other = rows == len(self.known)
        if other.any():
            h_other = h[other].float()  # [N, E]
            group = self.group_correction(h_other)
            own_offset = (h_other * self.offsets[self.offset_row[targets[other]]]).sum(-1)
            loss = loss.masked_scatter(other, loss[other] + group - own_offset)
        return loss.mean()

    @torch.no_grad()
    def full_wte(self) -> torch.Tensor:
        """[V, E] float32: the tied embedding GPT-2 loads."""
        return self.embed(torch.arange(VOCAB)).float()


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def held_out_loss(model: CompactGPT2, held_out: np.ndarray, context: int, exact: bool = False) -> float:
    """Mean nats/token on the held-out text in non-overlapping windows; ``exact`` computes every
    one of the 50,257 logits (the number the model card reports)."""
    model.eval()
    wte = model.full_wte() if exact else None
    total, count = 0.0, 0
    for start in range(0, len(held_out) - 1, context):
        chunk = torch.from_numpy(held_out[start : start + context + 1])[None]
        ids, targets = chunk[:, :-1], chunk[:, 1:]
        if exact:
            total += F.cross_entropy((model.hidden(ids).float() @ wte.T)[0], targets[0], reduction="sum").item()
        else:  # the training loss itself (its group term to second order), summed
            total += model.loss(ids, targets).item() * targets.numel()
        count += targets.numel()
    model.train()
    return total / count


@torch.no_grad()
def head_scores(model: CompactGPT2, seeds=range(5)) -> dict[str, list[list[float]]]:
    """The app's detector scores (gpt2_max.attribution.head_scores) on the induction test,
    averaged over seeds: attention on the previous token, and on the token after an earlier copy
    of the current one, over the queries that have such a key. [L][H] each."""
    model.eval()
    previous, induction = 0.0, 0.0
    for seed in seeds:
        ids = np.array(induction_test_ids(INDUCTION_LENGTH, seed=seed))
        patterns: list = []
        model.hidden(torch.from_numpy(ids)[None], patterns)
        P = torch.stack([p[0] for p in patterns]).double()  # [L, H, T, T]
        T = len(ids)
        same = torch.from_numpy(ids[:, None] == ids[None, :])
        duplicate = torch.tril(same, -1)
        induct = torch.zeros_like(duplicate)
        induct[:, 1:] = duplicate[:, :-1]
        prev = torch.eye(T, dtype=torch.bool).roll(-1, 1).tril(-1)
        for mask, name in ((prev, "previous"), (induct, "induction")):
            queries = mask.any(1)
            score = (P * mask).sum(-1)[..., queries].mean(-1)
            if name == "previous":
                previous = previous + score
            else:
                induction = induction + score
    model.train()
    n = len(list(seeds))
    return {"previous_token": (previous / n).tolist(), "induction": (induction / n).tolist()}


def baselines(train: np.ndarray, held_out: np.ndarray) -> dict[str, float]:
    """Unigram (add-one over the full vocabulary) and interpolated bigram held-out nats/token."""
    unigram = np.bincount(train, minlength=VOCAB).astype(np.float64) + 1.0
    unigram /= unigram.sum()
    uni = float(-np.log(unigram[held_out[1:]]).mean())
    pairs = {}
    for a, b in zip(train[:-1], train[1:]):
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    firsts = np.bincount(train[:-1], minlength=VOCAB).astype(np.float64)
    best = None
    for lam in (0.5, 0.6, 0.7, 0.8, 0.9):  # the interpolation weight chosen on the held-out text
        nll = 0.0
        for a, b in zip(held_out[:-1], held_out[1:]):
            p_bigram = pairs.get((a, b), 0) / firsts[a] if firsts[a] else 0.0
            nll -= math.log(lam * p_bigram + (1 - lam) * unigram[b])
        value = nll / (len(held_out) - 1)
        best = value if best is None else min(best, value)
    return {"unigram": uni, "bigram_interpolated": best}


# --------------------------------------------------------------------------- export


def export(model: CompactGPT2, out: Path, config: dict) -> None:
    """Hugging Face's GPT-2 layout: names without prefix, Conv1D weights [in, out], fp16."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"wte.weight": model.full_wte(), "wpe.weight": model.wpe.detach()}
    for i, block in enumerate(model.blocks):
        p = f"h.{i}."
        tensors.update(
            {
                p + "ln_1.weight": block.ln_1.weight,
                p + "ln_1.bias": block.ln_1.bias,
                p + "attn.c_attn.weight": block.c_attn.weight.T,
                p + "attn.c_attn.bias": block.c_attn.bias,
                p + "attn.c_proj.weight": block.attn_proj.weight.T,
                p + "attn.c_proj.bias": block.attn_proj.bias,
                p + "ln_2.weight": block.ln_2.weight,
                p + "ln_2.bias": block.ln_2.bias,
                p + "mlp.c_fc.weight": block.c_fc.weight.T,
                p + "mlp.c_fc.bias": block.c_fc.bias,
                p + "mlp.c_proj.weight": block.mlp_proj.weight.T,
                p + "mlp.c_proj.bias": block.mlp_proj.bias,
            }
        )
    tensors.update({"ln_f.weight": model.ln_f.weight, "ln_f.bias": model.ln_f.bias})
    arrays = {k: v.detach().float().contiguous().numpy().astype(np.float16) for k, v in tensors.items()}
    save_file(arrays, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_export(model: CompactGPT2, directory: Path) -> None:
    """Starts ``model`` from weights ``export`` wrote (a second phase of training): the inverse of
    export, the shared row recovered as the mean of the other ids' rows less their offsets."""
    from safetensors.numpy import load_file

    w = {k: torch.from_numpy(v.astype(np.float32)) for k, v in load_file(str(directory / "model.safetensors")).items()}
    with torch.no_grad():
        shared = (w["wte.weight"][model.other] - model.offsets).mean(0)
        model.wte.copy_(torch.cat([w["wte.weight"][model.known], shared[None]]))
        model.wpe.copy_(w["wpe.weight"][: model.wpe.shape[0]])
        for i, block in enumerate(model.blocks):
            p = f"h.{i}."
            for ours, theirs, conv1d in (
                (block.ln_1, "ln_1", False),
                (block.ln_2, "ln_2", False),
                (block.c_attn, "attn.c_attn", True),
                (block.attn_proj, "attn.c_proj", True),
                (block.c_fc, "mlp.c_fc", True),
                (block.mlp_proj, "mlp.c_proj", True),
            ):
                weight = w[p + theirs + ".weight"]
                ours.weight.copy_(weight.T if conv1d else weight)  # Conv1D stores [in, out]
                ours.bias.copy_(w[p + theirs + ".bias"])
        model.ln_f.weight.copy_(w["ln_f.weight"])
        model.ln_f.bias.copy_(w["ln_f.bias"])


def hf_config(args) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": VOCAB,
        "n_positions": args.context,
        "n_ctx": args.context,
        "n_embd": args.width,
        "n_layer": args.layers,
        "n_head": args.heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": END_OF_TEXT,
        "eos_token_id": END_OF_TEXT,
        "resid_pdrop": args.dropout,
        "embd_pdrop": args.dropout,
        "attn_pdrop": args.dropout,
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
    }


# --------------------------------------------------------------------------- main


def train(args: argparse.Namespace) -> None:
    """One phase: trains with ``args`` (from ``--init`` or a seeded start) and exports to ``args.out``."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        train, held_out = corpus_ids(Path(tmp))
    corpus_known = np.unique(train)
    # Ids with rows of their own; all others share one row (plus their fixed offsets).
    known = np.union1d(corpus_known, np.arange(OWN_ROWS_BELOW))
    print(
        f"train {len(train):,} tokens, held out {len(held_out):,}, distinct ids {len(corpus_known):,}, "
        f"rows of their own {len(known):,}",
        flush=True,
    )
    base = baselines(train, held_out)
    print(f"baselines: {base}", flush=True)

    model = CompactGPT2(
        known, args.layers, args.width, args.heads, args.context, args.dropout, args.seed, args.sinusoidal_positions
    )
    if args.init is not None:
        load_export(model, args.init)
        print(f"started from {args.init}: held out {held_out_loss(model, held_out, args.context):.4f}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "wpe"]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or n == "wpe"]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    total_steps = args.steps

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = min(1.0, (step - args.warmup) / max(1, total_steps - args.warmup))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    curve, best, best_state = [], None, None
    started = time.time()
    step = 0
    stages = stage_table(args)
    stage, stage_ends = 0, []  # index into stages; the step each finished stage ended at
    while step < total_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        while stages[stage].cap is not None and step >= stages[stage].cap:
            stage, stage_ends = stage + 1, stage_ends + [step]
        current = stages[stage]
        # The head stages use short windows (as many tokens a batch): at first a head's attention is
        # spread over every earlier position, so the signal to copy from one of them shrinks with the window.
        rows = args.batch * args.context // current.context
        ids, targets = batch(
            rng,
            train,
            rows,
            current.context,
            current.copy_share,
            known,
            current.triples_share,
            current.triple_gaps,
            current.runs,
            current.text_share,
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model.loss(ids, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed = time.time() - started
        if args.minutes and elapsed > args.minutes * 60 and total_steps > step + args.warmup:
            total_steps = step + 1  # out of time: end here, evaluating below
        if args.stop_step is not None and step >= args.stop_step:
            total_steps = step  # a phase ended early on purpose: evaluated below, then done
        if step % args.eval_every == 0 or step == total_steps:
            held = held_out_loss(model, held_out, args.context)
            scores = head_scores(model)
            prev = max(max(row) for row in scores["previous_token"])
            induction = max(max(row) for row in scores["induction"])
            tokens = step * args.batch * args.context
            curve.append(
                {
                    "step": step,
                    "tokens": tokens,
                    "minutes": elapsed / 60,
                    "train_loss": loss.item(),
                    "held_out": held,
                    "best_previous_token": prev,
                    "best_induction": induction,
                    "stage": current.name,
                }
            )
            while stages[stage].done_when is not None and (
                prev >= stages[stage].done_when[0] and induction >= stages[stage].done_when[1]
            ):  # what this stage is for has formed: on to the next
                stage, stage_ends = stage + 1, stage_ends + [step]
            print(json.dumps(curve[-1]), flush=True)
            # Kept: among checkpoints that beat the bigram baseline (a language model first), the
            # lowest held-out loss of those whose heads reach the targets (a previous-token and an
            # induction head), else of those with a previous-token head, else the lowest held-out loss.
            heads = (prev >= PREVIOUS_TOKEN_TARGET) + (prev >= PREVIOUS_TOKEN_TARGET and induction >= INDUCTION_TARGET)
            rank = (held < base["bigram_interpolated"], heads, -held)
            if best is None or rank > best:
                best = rank
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                export(model, args.out, hf_config(args))  # the best so far is always on disk

    model.load_state_dict(best_state)
    exact = held_out_loss(model, held_out, args.context, exact=True)
    scores = head_scores(model)
    minutes = (time.time() - started) / 60
    export(model, args.out, hf_config(args))
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "corpus": {
            "train_tokens": int(len(train)),
            "held_out_tokens": int(len(held_out)),
            "distinct_ids": int(len(corpus_known)),
            "own_rows": int(len(known)),
            "own_rows_below": OWN_ROWS_BELOW,
        },
        "corpus_token_ids": corpus_known.tolist(),  # the training text's ids (tests check continuations)
        "init": None
        if args.init is None
        else {
            "directory": str(args.init),
            "report": json.loads((args.init / "training.json").read_text())
            if (args.init / "training.json").is_file()
            else None,
        },
        "baselines_nats_per_token": base,
        "held_out_full_vocabulary": exact,
        "head_scores_on_induction_test": scores,
        "stages": [
            {**asdict(stage), "ended_at_step": end}
            for stage, end in zip(stages, stage_ends + [None] * len(stages), strict=False)
        ],
        "head_targets": {"previous_token": PREVIOUS_TOKEN_TARGET, "induction": INDUCTION_TARGET},
        "training_minutes": minutes,
        "curve": curve,
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"held-out loss (full vocabulary, exported weights before fp16): {exact:.4f}; {minutes:.1f} min")


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.one_phase:
        train(args)
        return
    check_recipe_run(args)
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        phases = recipe_phases(args, Path(work))
        for number, phase in enumerate(phases, start=1):
            print(f"phase {number} of {len(phases)}: {' '.join(RECIPE[number - 1])}", flush=True)
            train(phase)
    print(f"the recipe took {(time.time() - started) / 60:.1f} min; its model is in {args.out}")


if __name__ == "__main__":
    main()

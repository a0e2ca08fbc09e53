"""`lm.spec.medusa`: Medusa-1 decoding heads on a frozen model, verified as a token tree.

Paper: Cai et al., "Medusa: Simple LLM Inference Acceleration Framework with Multiple Decoding
Heads" (arXiv 2401.10774). Head k reads the backbone's last hidden state at position t and
guesses the token at t+1+k (the model's own head guesses t+1). Its architecture is the
paper's: one residual block h + SiLU(W1 h + b1) with W1 = 0 at start, then a vocabulary
projection initialised from the model's output layer, so an untrained head starts as a copy
of the model's next-token head.

Medusa-1 keeps the backbone frozen. Heads are trained by self-distillation (paper §2.3.2): the
frozen model continues calibration prompts greedily (`distill_from="generations"`, the default;
never held-out text) and on those continuations its own argmax at t+1+k is head k's target, so
the heads learn exactly what greedy verification accepts. `distill_from="text"` instead trains
on teacher-forced calibration text, where the next tokens are the corpus's rather than the
model's: on SmolLM2 that capped head 1 at top-1 0.09 (docs/speculative.md). Training time —
generating the data included — is setup time (`setup_s`); heads are cached as safetensors keyed
by the model's weights and the training config, so profiling the same model again does not retrain.
The held-back quarter of the data is scored every `eval_every` steps (the training curve, kept
with the heads) and the best-scoring heads are kept (early stop once `patience` scores in a
row do not improve).

Verification: a tree of candidates (paper §2.1.2): a node at depth d takes one of head d's
top-k tokens; the tree keeps the `tree_nodes` paths with the highest estimated chance of
being accepted (product of the heads' measured top-i accuracies — the paper's tree
construction), and one tree-masked forward checks them all. Sampling uses a chain of tokens
drawn from the heads and speculative sampling instead (exact; the paper's typical acceptance
is not, so it is not used). Deviation: by default the vocabulary projection stays shared with
the model and frozen (`train_vocab_projection=False`) — training V×D per head is minutes per
step-budget on a 2-core CPU for a 49k vocabulary; the residual blocks carry the learning.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import cached_tensors
from executors.families.lm.workloads import calibration_stream
from executors.methods.spec.distill import self_generations
from executors.methods.spec.engine import (
    Draft,
    SpeculativeMethod,
    TokenTree,
    decoder_of,
    probabilities,
    speculative_generate,
)
from executors.registry import MethodConfig, bounded, register_method
from executors.training import Schedule, train

log = logging.getLogger(__name__)
DISTILL_SOURCES = ("generations", "text")


@dataclass(frozen=True)
class MedusaConfig(MethodConfig):
    heads: int = bounded(3, 1, 8)
    tree_nodes: int = bounded(12, 0, 64)  # non-root nodes in the verification tree; 0 verifies a chain of top-1s
    top_k: int = bounded(4, 1, 16)  # candidates per head the tree may branch into
    distill_from: str = "generations"  # the model's own continuations (paper) or "text" (teacher-forced corpus)
    train_prompts: int = bounded(192, 1, 4096)  # calibration prompts the model continues ("generations")
    train_prompt_len: int = bounded(32, 4, 4096)
    train_gen_len: int = bounded(96, 4, 4096)
    train_windows: int = bounded(32, 1, 4096)  # calibration windows ("text")
    train_seq_len: int = bounded(128, 8, 4096)
    train_steps: int = bounded(600, 0, 100_000)
    train_batch: int = bounded(256, 1, 65_536)  # positions per optimiser step
    lr: float = bounded(1e-3, 0.0, 1.0)
    eval_every: int = bounded(50, 1, 100_000)  # steps between scores of the held-back quarter
    patience: int = bounded(3, 1, 1000)  # scores without improvement before training stops
    train_vocab_projection: bool = False
    seed: int = 0
    version: int = 1

    def __post_init__(self):
        if self.distill_from not in DISTILL_SOURCES:
            raise ValueError(f"distill_from must be one of {DISTILL_SOURCES}, not {self.distill_from!r}")


class MedusaHeads(nn.Module):
    def __init__(self, output_weight: torch.Tensor, heads: int, own_projection: bool):
        super().__init__()
        dim = output_weight.shape[1]
        linears = [nn.Linear(dim, dim) for _ in range(heads)]
        for linear in linears:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        self.blocks = nn.ModuleList(linears)
        self.projections = (
            nn.ParameterList(nn.Parameter(output_weight.detach().clone()) for _ in range(heads))
            if own_projection
            else None
        )
        self.shared_weight = output_weight.detach()  # a plain attribute: not saved, not trained

    def head(self, hidden: torch.Tensor, k: int, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [..., D] → head k's logits [..., V], or only the `vocab` ids' logits."""
        state = hidden + F.silu(self.blocks[k](hidden))
        weight = self.projections[k] if self.projections is not None else self.shared_weight
        if vocab is not None:
            weight = weight[vocab]
        return F.linear(state, weight.to(state.dtype))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., D] → logits [..., heads, V]."""
        return torch.stack([self.head(hidden, k) for k in range(len(self.blocks))], dim=-2)


def output_weight(model: nn.Module) -> torch.Tensor:
    """The float vocabulary projection, also when a dynamic-int8 transform packed it."""
    weight = decoder_of(model).output.weight
    return weight().dequantize() if callable(weight) else weight


def distillation_set(bundle, config: MedusaConfig) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Hidden states [N, T, D], the frozen model's argmax [N, T] and the seconds generating took."""
    model = bundle.model
    if config.distill_from == "generations":
        data = self_generations(bundle, config.train_prompts, config.train_prompt_len, config.train_gen_len, batch=16)
        # from the last prompt token on, every next token is the model's own greedy choice
        return data.hidden, data.argmax, data.seconds
    stream = calibration_stream(bundle)
    length = config.train_seq_len
    if len(stream) < length + 1:
        raise ValueError(f"lm.spec.medusa: calibration text has {len(stream)} tokens, needs > {length}")
    stride = max(1, (len(stream) - length) // config.train_windows)
    windows = torch.stack(
        [stream[i : i + length] for i in range(0, stride * config.train_windows, stride) if i + length <= len(stream)]
    )
    hiddens, targets = [], []
    with torch.no_grad():  # not inference mode: these tensors feed autograd in train_heads
        for chunk in windows.split(4):
            logits, hidden = model(chunk, return_hidden=True)
            hiddens.append(hidden.float())
            targets.append(logits.argmax(-1))
    return torch.cat(hiddens), torch.cat(targets), 0.0


def head_examples(hidden: torch.Tensor, targets: torch.Tensor, head: int):
    """(inputs, labels) for head k (0-based): hidden at t, the model's argmax at t+1+k."""
    shift = head + 1
    return hidden[:, :-shift].reshape(-1, hidden.shape[-1]), targets[:, shift:].reshape(-1)


EVAL_POSITIONS = 2048  # held-back positions per head scored for the training curve (full vocabulary)


def train_heads(
    heads: MedusaHeads,
    training_set: tuple[torch.Tensor, torch.Tensor],
    held_back: tuple[torch.Tensor, torch.Tensor],
    config: MedusaConfig,
) -> list[dict]:
    """Self-distillation with the paper's per-head loss weights 0.8^k; returns the training curve
    (held-back top-1 per head every `eval_every` steps) and leaves the best-scoring heads in place.

    The softmax runs over the tokens the model actually predicts on the training data (every
    label is among them), not the whole vocabulary: for SmolLM2 that is a few thousand of 49 152
    ids and makes training minutes instead of an hour on a 2-core CPU. Byte LMs lose nothing by it.
    The curve is scored with the whole vocabulary.
    """
    hidden, targets = training_set
    vocab = targets.unique()  # sorted, so labels map to their rank by searchsorted
    examples = [head_examples(hidden, targets, k) for k in range(len(heads.blocks))]
    probe = torch.Generator().manual_seed(config.seed + 1)
    scored = [
        tuple(t[:EVAL_POSITIONS] for t in _shuffled(head_examples(held_back[0], held_back[1], k), probe))
        for k in range(len(heads.blocks))
    ]
    curve: list[dict] = []
    best: dict = {"score": -1.0, "state": None}

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        total = torch.zeros(())
        for k, (inputs, labels) in enumerate(examples):
            pick = torch.randint(len(labels), (config.train_batch,), generator=generator)
            loss = F.cross_entropy(heads.head(inputs[pick], k, vocab), torch.searchsorted(vocab, labels[pick]))
            total = total + 0.8**k * loss
        return total

    def evaluate(step: int, loss: float) -> bool:
        if (step + 1) % config.eval_every and step + 1 < config.train_steps:
            return False
        top1 = [_top1(heads, inputs, labels, k) for k, (inputs, labels) in enumerate(scored)]
        curve.append({"step": step + 1, "loss": round(loss, 4), "top1": [round(a, 4) for a in top1]})
        score = sum(0.8**k * a for k, a in enumerate(top1))
        if score > best["score"]:
            best.update(score=score, state={k: v.clone() for k, v in heads.state_dict().items()}, stale=0)
            return False
        best["stale"] += 1
        return best["stale"] >= config.patience

    params = [p for p in heads.parameters() if p.requires_grad]
    train(params, step_loss, Schedule(config.lr, config.train_steps, decay="constant"), seed=config.seed,
          modules=[heads], name="medusa", on_step=evaluate)  # fmt: skip
    if best["state"] is not None:
        heads.load_state_dict(best["state"])
    return curve


def _shuffled(pair: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator):
    order = torch.randperm(len(pair[1]), generator=generator)
    return pair[0][order], pair[1][order]


@torch.no_grad()
def _top1(heads: MedusaHeads, inputs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    return (heads.head(inputs, k).argmax(-1) == labels).float().mean().item() if len(labels) else 0.0


@torch.inference_mode()
def topk_accuracy(heads: MedusaHeads, hidden: torch.Tensor, targets: torch.Tensor, top_k: int) -> list[list[float]]:
    """acc[k][i]: how often head k's i-th ranked token is the model's argmax (held-back windows)."""
    table = []
    for k in range(len(heads.blocks)):
        inputs, labels = head_examples(hidden, targets, k)
        ranked = heads.head(inputs, k).topk(top_k, dim=-1).indices
        table.append([(ranked[:, i] == labels).float().mean().item() for i in range(top_k)])
    return table


def build_tree(accuracy: list[list[float]], nodes: int) -> tuple[TokenTree, list[int], list[int]]:
    """Best-first: the `nodes` candidate paths with the highest product of head accuracies.

    A child's product never exceeds its parent's, so the chosen set is closed under taking
    ancestors — a valid tree. Returns the tree and, per node, its depth and the rank it takes.
    """
    heads, top_k = len(accuracy), len(accuracy[0])
    chosen: dict[tuple[int, ...], int] = {(): 0}
    parents, depths, ranks = [-1], [0], [0]
    frontier: list[tuple[float, tuple[int, ...]]] = [(-accuracy[0][i], (i,)) for i in range(top_k)]
    heapq.heapify(frontier)
    while frontier and len(parents) <= nodes:
        negative, path = heapq.heappop(frontier)
        chosen[path] = len(parents)
        parents.append(chosen[path[:-1]])
        depths.append(len(path))
        ranks.append(path[-1])
        if len(path) < heads:
            for i in range(top_k):
                heapq.heappush(frontier, (negative * accuracy[len(path)][i], path + (i,)))
    return TokenTree(tuple(parents)), depths, ranks


class MedusaProposer:
    def __init__(self, heads: MedusaHeads, tree: TokenTree | None, depths: list[int], ranks: list[int], top_k: int):
        self.heads, self.tree, self.top_k = heads, tree, top_k
        self.node_depth = torch.tensor(depths[1:]) - 1  # head index of each non-root node
        self.node_rank = torch.tensor(ranks[1:])
        self.last_hidden: torch.Tensor | None = None  # [B, D] at the last token in the cache

    def start(self, prompts, logits, hidden, counts) -> None:
        self.last_hidden = hidden[:, -1]

    def propose(self, cache, pending, sampling, temperature, generator, counts) -> Draft:
        logits = self.heads(self.last_hidden)  # [B, heads, V]: guesses for the tokens after pending
        if sampling != "greedy":
            probs = probabilities(logits, temperature)
            drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            return Draft(tokens=drawn.view(probs.shape[:2]), probs=probs)
        if self.tree is None:
            return Draft(tokens=logits.argmax(-1))
        ranked = logits.topk(self.top_k, dim=-1).indices  # [B, heads, top_k]
        return Draft(tokens=ranked[:, self.node_depth, self.node_rank], tree=self.tree)

    def observe(self, verified, sampling, temperature, generator) -> None:
        rows = torch.arange(verified.hidden.shape[0], device=verified.hidden.device)
        self.last_hidden = verified.hidden[rows, verified.kept[:, -1]]


@dataclass
class MedusaRunner:
    model: torch.nn.Module
    config: MedusaConfig
    heads: MedusaHeads
    accuracy: list[list[float]]
    setup_s: float  # head training (0 when the cached heads were loaded)
    cached: bool
    training: dict  # the training curve and the cost of generating the distillation data

    @property
    def extra_modules(self) -> tuple[nn.Module, ...]:
        """Weights beyond the model's, for the harness's memory figure."""
        return (self.heads,)

    def generate(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        seed: int = 0,
    ):
        tree, depths, ranks = None, [0], [0]
        if self.config.tree_nodes > 0:
            tree, depths, ranks = build_tree(self.accuracy, self.config.tree_nodes)
        proposer = MedusaProposer(self.heads, tree, depths, ranks, self.config.top_k)
        width = max(self.config.heads, self.config.tree_nodes)
        generation = speculative_generate(
            self.model,
            proposer,
            prompts,
            max_new_tokens,
            width=width,
            sampling=sampling,
            temperature=temperature,
            seed=seed,
        )
        generation.stats.update(
            head_top1_accuracy=[round(row[0], 4) for row in self.accuracy],
            tree_nodes=tree.size - 1 if tree and sampling == "greedy" else 0,
            heads_cached=self.cached,
            setup_s=self.setup_s,
            heads_build_s=self.training.get("build_s"),  # generating + training, when they were made
            heads_generate_s=self.training.get("generate_s"),
            heads_train_steps=(self.training.get("curve") or [{}])[-1].get("step"),
        )
        return generation


def training_knobs(config: MedusaConfig) -> dict:
    """What the heads depend on (the cache key): the tree shape is chosen at decode time."""
    return {k: v for k, v in asdict(config).items() if k not in ("tree_nodes", "top_k")}


def prepare_heads(bundle, config: MedusaConfig) -> tuple[MedusaHeads, list[list[float]], float, bool, dict]:
    """Cached heads for this model and config, or freshly distilled ones (then cached)."""
    model = bundle.model
    heads = MedusaHeads(output_weight(model), config.heads, config.train_vocab_projection)

    def build():
        torch.manual_seed(config.seed)
        with torch.inference_mode(False), torch.enable_grad():  # a caller may hold inference mode
            hidden, targets, generate_s = distillation_set(bundle, config)
            split = max(1, len(hidden) * 3 // 4)  # the last quarter scores the heads and builds the tree
            held_back = (hidden[split:], targets[split:])
            curve = train_heads(heads, (hidden[:split], targets[:split]), held_back, config)
        accuracy = topk_accuracy(heads, *held_back, config.top_k)
        log.info("medusa: %d heads, top-1 accuracy %s", config.heads, [round(row[0], 3) for row in accuracy])
        training = {"curve": curve, "generate_s": round(generate_s, 1), "positions": int(split * hidden.shape[1])}
        return heads.state_dict(), {"accuracy": accuracy, "training": training}

    cached = cached_tensors("medusa", model, training_knobs(config), build)
    if cached.hit:
        heads.load_state_dict(cached.tensors)
    setup_s = 0.0 if cached.hit else cached.build_s
    training = {**cached.meta.get("training", {}), "build_s": cached.build_s}
    return heads.eval(), cached.meta["accuracy"], setup_s, cached.hit, training


@register_method(
    "lm.spec.medusa",
    MedusaConfig,
    category="lm-decode",
    families=("lm",),
    changes=("forward_passes",),
    paper="Medusa: Simple LLM Inference Acceleration Framework with Multiple Decoding Heads",
    arxiv="2401.10774",
    catalogue_row=16,
    lossless=True,
)
class Medusa(SpeculativeMethod):
    def supports(self, bundle, device):
        reason = super().supports(bundle, device)
        if reason is None and not bundle.calibration_texts:
            reason = "needs calibration text to train its heads"
        return reason

    def apply(self, bundle, config):
        if config.heads < 1 or config.top_k < 1 or config.tree_nodes < 0:
            raise ValueError("lm.spec.medusa: heads and top_k must be ≥ 1, tree_nodes ≥ 0")
        heads, accuracy, setup_s, cached, training = prepare_heads(bundle, config)
        return MedusaRunner(bundle.model, config, heads, accuracy, setup_s, cached, training)

"""`lm.spec.parallel_prompt`: parallel prompt decoding (PPD) with a hardware-aware sparse tree.

Paper: Chen et al., arXiv 2405.18628 (details and deviations: docs/speculative.md). Trained
prompt-token embeddings appended to the input guess future tokens in the same forward: prompt
token i after the last known token x_t (position t+1+i) guesses x_{t+2+i}; with ensemble
prompt tokens each is `ensemble` virtual tokens in separate streams, logits averaged. Only the
embeddings train (KL distillation from the frozen model on calibration text; seeded, cached,
training time = setup time). Each verify forward is one tree: the pending token, candidates
from the last forward's guesses, and prompt-token chains hanging off them; the chain of the
last accepted node gives the next guesses (one tree per number of guesses at hand: the
dynamic sparse tree). The tree budget is chosen from a verify-cost probe on this machine.
Prompt tokens never enter the KV cache; greedy output equals the baseline's exactly.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import cached_tensors
from executors.families.lm.model import DecoderLM
from executors.methods.spec.engine import (
    Draft,
    SpeculativeMethod,
    TokenTree,
    decoder_of,
    probabilities,
    speculative_generate,
)
from executors.methods.spec.medusa import build_tree
from executors.registry import MethodConfig, bounded, register_method
from executors.training import Schedule, frozen, train

log = logging.getLogger(__name__)

BUDGETS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # verify-forward sizes the probe may choose from
CANDIDATE_COUNTS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # candidate nodes a tree may hold
PROBE_CONTEXT = 64


@dataclass(frozen=True)
class ParallelPromptConfig(MethodConfig):
    prompt_tokens: int = bounded(3, 1, 16)  # m: tokens guessed beyond the next one per forward
    ensemble: int = bounded(1, 1, 8)  # virtual tokens per prompt token (EPT); 1 is the authors' low-latency setting
    top_k: int = bounded(4, 1, 16)  # guesses per position a tree may branch into
    tree_budget: int = bounded(0, 0, 128)  # inputs per verify forward; 0 = chosen by the latency probe on this machine
    max_tree_budget: int = bounded(32, 1, 128)
    train_windows: int = 32
    train_seq_len: int = 128
    insertions: int = 12  # prompt groups inserted into each window per step
    train_steps: int = 80
    train_batch: int = 4  # windows per step
    lr: float = 3e-2  # 1e-2 (the authors') learnt slower in 80 steps here
    seed: int = 0
    version: int = 1


TRAINING_KNOBS = (
    "prompt_tokens",
    "ensemble",
    "train_windows",
    "train_seq_len",
    "insertions",
    "train_steps",
    "train_batch",
    "lr",
    "seed",
)


class PromptTokens(nn.Module):
    """The only trained weights: [prompt_tokens, ensemble, dim] input embeddings."""

    def __init__(self, count: int, ensemble: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(count, ensemble, dim))


# ---- training ---------------------------------------------------------------------------


def token_windows(tokenizer, texts: tuple[str, ...], length: int, count: int) -> torch.Tensor:
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    stream = torch.tensor([t for text in texts for t in tokenizer.encode(text) + eos])
    if len(stream) < length:
        raise ValueError(f"lm.spec.parallel_prompt: calibration text has {len(stream)} tokens, needs {length}")
    stride = max(1, (len(stream) - length) // count)
    return torch.stack([stream[i : i + length] for i in range(0, len(stream) - length + 1, stride)][:count])


def insertion_layout(length: int, points: list[int], count: int, ensemble: int):
    """Positions [N] and mask [N, N] for a window followed by one prompt group per point.

    Prompt node (g, i, j) — group g, prompt token i, stream j — sits at position t_g+1+i and
    sees the window up to t_g plus stream j of its group's earlier prompt tokens.
    """
    total = length + len(points) * count * ensemble
    mask = torch.zeros(total, total, dtype=torch.bool)
    mask[:length, :length] = torch.ones(length, length, dtype=torch.bool).tril()
    positions = torch.cat((torch.arange(length), torch.zeros(total - length, dtype=torch.long)))
    for g, point in enumerate(points):
        for i, j in product(range(count), range(ensemble)):
            node = length + (g * count + i) * ensemble + j
            positions[node] = point + 1 + i
            mask[node, : point + 1] = True
            for k in range(i + 1):
                mask[node, length + (g * count + k) * ensemble + j] = True
    return positions, mask


def prompt_and_teacher_logits(model, prompts: PromptTokens, windows: torch.Tensor, points: list[int]):
    """(student [B, G, m, V]: stream-averaged prompt logits, teacher [B, G, m, V]) in one forward.

    The window's tokens never see the prompt nodes, so their logits are the frozen model's own
    distribution: the teacher for prompt token i of group g is the window's logits at t_g+1+i.
    """
    count, ensemble, _ = prompts.weight.shape
    batch, length = windows.shape
    positions, mask = insertion_layout(length, points, count, ensemble)
    embed = model.tok_embeddings(windows)
    group = prompts.weight.reshape(1, count * ensemble, -1).to(embed.dtype)
    fed = torch.cat((embed, group.expand(batch, -1, -1).repeat(1, len(points), 1)), dim=1)
    logits = model(
        torch.zeros(batch, fed.shape[1], dtype=torch.long), embeddings=fed, positions=positions, tree_mask=mask
    )
    student = logits[:, length:].reshape(batch, len(points), count, ensemble, -1).mean(dim=3)
    at = torch.tensor(points)[:, None] + 1 + torch.arange(count)[None]
    return student, logits[:, at].detach()


def differentiable(model) -> DecoderLM:
    """The model, or a float twin of it: torch's dynamic int8 linear layers have no backward."""
    decoder = decoder_of(model)
    packed = [
        name for name, module in decoder.named_modules() if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)
    ]
    if not packed:
        return decoder
    twin = copy.deepcopy(decoder)
    for name in packed:
        source = twin.get_submodule(name)
        assert isinstance(source, torch.ao.nn.quantized.dynamic.Linear)  # as `packed` found it
        linear = nn.Linear(source.in_features, source.out_features, bias=source.bias() is not None)
        linear.weight.data = source.weight().dequantize()
        if source.bias() is not None:
            linear.bias.data = source.bias().detach().clone()
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent), child, linear)
    return twin


def train_prompts(model, windows: torch.Tensor, config: ParallelPromptConfig) -> PromptTokens:
    """Distillation with the model frozen: KL(model's next-token distribution ‖ prompt guess)."""
    decoder = differentiable(model)
    generator = torch.Generator().manual_seed(config.seed)
    embeddings = decoder.tok_embeddings.weight.detach()
    prompts = PromptTokens(config.prompt_tokens, config.ensemble, embeddings.shape[1])
    with torch.no_grad():  # the mean token plus noise: distinct streams must not start identical
        noise = torch.randn(prompts.weight.shape, generator=generator) * embeddings.std()
        prompts.weight.copy_(embeddings[windows.flatten()].float().mean(0) + noise)
    last_start = windows.shape[1] - config.prompt_tokens - 1

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        rows = torch.randint(len(windows), (config.train_batch,), generator=generator)
        points = sorted(torch.randint(last_start, (config.insertions,), generator=generator).tolist())
        student, teacher = prompt_and_teacher_logits(decoder, prompts, windows[rows], points)
        log_student, log_teacher = F.log_softmax(student, -1), F.log_softmax(teacher, -1)
        return F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(-1).mean()

    schedule = Schedule(config.lr, config.train_steps, decay="constant", optimizer="adam")
    with frozen(decoder):  # the model stays fixed: gradients flow into the prompt tokens only
        train(prompts.parameters(), step_loss, schedule, seed=config.seed, name="parallel_prompt", log_every=20,
              generator=generator)  # fmt: skip
    return prompts


@torch.no_grad()
def prompt_accuracy(model, prompts: PromptTokens, windows: torch.Tensor, top_k: int) -> list[list[float]]:
    """acc[i][r]: how often prompt token i's r-th ranked guess is the model's argmax (held-out windows)."""
    count = prompts.weight.shape[0]
    points = list(range(0, windows.shape[1] - count - 1, 3))
    hits = torch.zeros(count, top_k)
    for chunk in windows.split(2):
        student, teacher = prompt_and_teacher_logits(decoder_of(model), prompts, chunk, points)
        ranked = student.topk(top_k, dim=-1).indices
        hits += (ranked == teacher.argmax(-1, keepdim=True)).float().sum(dim=(0, 1))
    return (hits / (len(windows) * len(points))).tolist()


# ---- the dynamic sparse tree ------------------------------------------------------------


@dataclass(frozen=True)
class TreePlan:
    """The verify tree used when `guesses` predictions are at hand (one plan per count)."""

    tree: TokenTree  # candidates first (node 0 = pending token), then prompt nodes
    candidates: int
    depths: tuple[int, ...]  # per candidate node: the guess position it takes (1-based)
    ranks: tuple[int, ...]
    prompt_slots: tuple[tuple[int, int], ...]  # per prompt node: (prompt token, stream)
    prompt_nodes: torch.Tensor  # [candidates + 1, m, ensemble]: prompt node indices, -1 if none
    prompt_counts: tuple[int, ...]  # per candidate node: prompt tokens attached
    expected_accepted: float
    transitions: tuple[float, ...]  # probability that the next step has n guesses


def path_probabilities(tree: TokenTree, depths, ranks, accuracy) -> list[float]:
    reach = [1.0] * tree.size
    for node in range(1, tree.size):
        reach[node] = reach[tree.parents[node]] * accuracy[depths[node] - 1][ranks[node]]
    return reach


def plan_tree(
    accuracy: list[list[float]], guesses: int, candidates: int, budget: int, ensemble: int, value: list[float]
) -> TreePlan | None:
    """Candidates from the best-first tree; prompt tokens per node trimmed to the budget where
    the expected loss (chance the node ends acceptance × value of one more guess) is least."""
    count = len(accuracy)
    if guesses == 0 or candidates == 0:
        base, depths, ranks = TokenTree((-1,)), [0], [0]
    else:
        base, depths, ranks = build_tree(accuracy[:guesses], candidates)
    reach = path_probabilities(base, depths, ranks, accuracy)
    last = list(reach)  # chance that acceptance stops exactly at the node
    for node in range(1, base.size):
        last[base.parents[node]] -= reach[node]
    attached = [count] * base.size
    room = budget - base.size
    while ensemble * sum(attached) > room:
        options = [
            (last[u] * (value[attached[u]] - value[attached[u] - 1]), u)
            for u in range(base.size)
            if attached[u] > (1 if u == 0 else 0)
        ]
        if not options:
            return None
        attached[min(options)[1]] -= 1
    parents, slots = list(base.parents), []
    nodes = torch.full((base.size, count, ensemble), -1, dtype=torch.long)
    for u, j in product(range(base.size), range(ensemble)):
        for i in range(attached[u]):
            nodes[u, i, j] = len(parents)
            parents.append(u if i == 0 else int(nodes[u, i - 1, j]))
            slots.append((i, j))
    transitions = [0.0] * (count + 1)
    for u in range(base.size):
        transitions[attached[u]] += max(last[u], 0.0)
    return TreePlan(
        TokenTree(tuple(parents)),
        base.size - 1,
        tuple(depths),
        tuple(ranks),
        tuple(slots),
        nodes,
        tuple(attached),
        sum(reach[1:]),
        tuple(transitions),
    )


def stationary_tokens(plans: Sequence[TreePlan]) -> float:
    """Long-run tokens per verify step of the Markov chain over 'guesses at hand'."""
    chain = np.array([plan.transitions for plan in plans])
    states = len(plans)
    system = np.vstack((chain.T - np.eye(states), np.ones(states)))
    weights = np.linalg.lstsq(system, np.r_[np.zeros(states), 1.0], rcond=None)[0]
    return float(sum(w * (1.0 + plan.expected_accepted) for w, plan in zip(weights, plans, strict=False)))


def design_trees(accuracy: list[list[float]], budget: int, ensemble: int) -> tuple[list[TreePlan], float]:
    """One plan per number of guesses (0..m), candidate counts searched jointly on a grid."""
    count = len(accuracy)
    value = [1.0]  # a proxy for 'tokens per step with n guesses': the top-1 chain's expectation
    for i in range(count):
        value.append(value[-1] + float(np.prod([accuracy[k][0] for k in range(i + 1)])))
    options = []
    for guesses in range(count + 1):
        sizes = [c for c in CANDIDATE_COUNTS if c < budget and (guesses > 0 or c == 0)]
        plans = [plan_tree(accuracy, guesses, c, budget, ensemble, value) for c in sizes]
        options.append([p for p in plans if p is not None])
    if not all(options):
        raise ValueError(f"a tree budget of {budget} cannot hold one prompt token per stream")
    best = max(product(*options), key=stationary_tokens)
    return list(best), stationary_tokens(best)


@torch.inference_mode()
def verify_cost(model, sizes: list[int], rounds: int = 7, repeats: int = 3) -> dict[int, float]:
    """Verify-forward time per size after a 64-token context, over a 1-token step's (medians of
    interleaved rounds, each timing `repeats` forwards: single forwards are too noisy here)."""
    decoder = decoder_of(model)
    context = (torch.arange(PROBE_CONTEXT) * 7919 % decoder.config.vocab_size)[None]
    cache = decoder.new_cache(1, PROBE_CONTEXT + max(sizes))
    model(context, cache)
    times: dict[int, list[float]] = {size: [] for size in [1, *sizes]}
    for _ in range(rounds + 1):  # the first round warms up
        for size, samples in times.items():
            mask = torch.ones(size, size, dtype=torch.bool).tril() if size > 1 else None
            began = time.perf_counter()
            for _ in range(repeats):
                cache.crop(PROBE_CONTEXT)
                model(context[:, :size], cache, tree_mask=mask)
            samples.append(time.perf_counter() - began)
    step = statistics.median(times[1][1:])
    return {size: statistics.median(times[size][1:]) / step for size in sizes}


# ---- decoding ---------------------------------------------------------------------------


class PromptProposer:
    def __init__(self, model, prompts: PromptTokens, plans: list[TreePlan], top_k: int):
        self.embed = decoder_of(model).tok_embeddings
        self.prompts = prompts.weight.detach()
        self.plans, self.top_k = plans, top_k
        self.guesses: torch.Tensor | None = None  # [B, n, V] logits for the tokens after pending
        self.plan: TreePlan | None = None

    def start(self, prompts, logits, hidden, counts) -> None:
        self.guesses = logits[:, :0]

    def _prompt_embeddings(self, batch: int, slots) -> torch.Tensor:
        rows = self.prompts[[i for i, _ in slots], [j for _, j in slots]]
        return rows.to(self.embed.weight.dtype)[None].expand(batch, -1, -1)

    def propose(self, cache, pending, sampling, temperature, generator, counts) -> Draft:
        assert self.guesses is not None, "start() sets the first guesses"
        batch, guesses = pending.shape[0], self.guesses.shape[1]
        if sampling != "greedy":  # a chain drawn from the guesses; stream 0's prompt tokens after it
            probs = probabilities(self.guesses, temperature)
            drafts = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(batch, guesses)
            slots = [(i, 0) for i in range(self.prompts.shape[0])]
            return self._draft(pending, drafts, slots, None, probs)
        self.plan = plan = self.plans[guesses]
        ranked = self.guesses.topk(self.top_k, dim=-1).indices  # [B, n, top_k]
        depth = torch.tensor(plan.depths[1:], dtype=torch.long) - 1
        rank = torch.tensor(plan.ranks[1:], dtype=torch.long)
        return self._draft(pending, ranked[:, depth, rank], plan.prompt_slots, plan.tree, None)

    def _draft(self, pending, drafts, slots, tree, probs) -> Draft:
        batch = pending.shape[0]
        fed = torch.cat((self.embed(torch.cat((pending, drafts), dim=1)), self._prompt_embeddings(batch, slots)), dim=1)
        placeholders = torch.full((batch, len(slots)), -1, dtype=torch.long, device=pending.device)
        return Draft(
            tokens=torch.cat((drafts, placeholders), dim=1), probs=probs, tree=tree, embeddings=fed, appended=len(slots)
        )

    def observe(self, verified, sampling, temperature, generator) -> None:
        batch = verified.logits.shape[0]
        assert self.guesses is not None, "start() sets the first guesses"
        if sampling != "greedy":  # guesses only when the whole chain survived (then stream 0 read them)
            drafted = self.guesses.shape[1]
            full = verified.kept.shape[1] == drafted + 1
            count = self.prompts.shape[0] if full else 0
            self.guesses = verified.logits[:, drafted + 1 : drafted + 1 + count]
            return
        assert self.plan is not None, "a greedy propose() chose the plan"
        nodes = self.plan.prompt_nodes[verified.kept[:, -1].cpu()]  # [B, m, ensemble]
        usable = int(min(self.plan.prompt_counts[u] for u in verified.kept[:, -1].tolist()))
        rows = torch.arange(batch)[:, None, None]
        self.guesses = verified.logits[rows, nodes[:, :usable]].mean(dim=2)


@dataclass
class ParallelPromptRunner:
    model: nn.Module
    config: ParallelPromptConfig
    prompts: PromptTokens
    accuracy: list[list[float]]
    plans: list[TreePlan]
    budget: int
    expected_tokens: float
    cost: dict[int, float]  # probed verify cost per budget (empty when the budget was fixed)
    setup_s: float
    cached: bool

    @property
    def extra_modules(self) -> tuple[nn.Module, ...]:
        return (self.prompts,)

    def generate(
        self,
        prompts: torch.Tensor,
        max_new_tokens: int,
        *,
        sampling: str = "greedy",
        temperature: float = 1.0,
        seed: int = 0,
    ):
        proposer = PromptProposer(self.model, self.prompts, self.plans, self.config.top_k)
        width = max(self.budget, 2 * self.config.prompt_tokens + 1)
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
            prompt_top1_accuracy=[round(row[0], 4) for row in self.accuracy],
            tree_budget=self.budget,
            tree_sizes=[plan.tree.size for plan in self.plans],
            tree_candidates=[plan.candidates for plan in self.plans],
            expected_tokens_per_step=round(self.expected_tokens, 4),
            verify_cost=({str(k): round(v, 3) for k, v in self.cost.items()}),
            prompts_cached=self.cached,
            setup_s=self.setup_s,
        )
        return generation


def training_knobs(config: ParallelPromptConfig) -> dict:
    """What the prompt tokens depend on (the cache key)."""
    return {k: getattr(config, k) for k in TRAINING_KNOBS}


def prepare_prompts(bundle, config: ParallelPromptConfig) -> tuple[PromptTokens, list[list[float]], float, bool]:
    """Cached prompt tokens for this model and config, or freshly distilled ones (then cached)."""
    model = bundle.model
    prompts = PromptTokens(config.prompt_tokens, config.ensemble, decoder_of(model).config.dim)

    def build():
        windows = token_windows(bundle.tokenizer, bundle.calibration_texts, config.train_seq_len, config.train_windows)
        split = max(1, len(windows) * 3 // 4)  # the last quarter measures accuracy for the tree
        trained = train_prompts(model, windows[:split], config)
        prompts.load_state_dict(trained.state_dict())
        accuracy = prompt_accuracy(model, prompts, windows[split:], config.top_k)
        log.info("parallel_prompt: %d×%d prompt tokens, top-1 accuracy %s", config.prompt_tokens, config.ensemble,
                 [round(row[0], 3) for row in accuracy])  # fmt: skip
        return {"weight": prompts.weight}, {"accuracy": accuracy}

    cached = cached_tensors("parallel_prompt", model, training_knobs(config), build)
    if cached.hit:
        prompts.load_state_dict(cached.tensors)
    return prompts, cached.meta["accuracy"], 0.0 if cached.hit else cached.build_s, cached.hit


def choose_budget(model, accuracy, config: ParallelPromptConfig):
    """The fixed budget, or the one with the most expected tokens per unit of verify time here."""
    if config.tree_budget > 0:
        plans, tokens = design_trees(accuracy, config.tree_budget, config.ensemble)
        return config.tree_budget, plans, tokens, {}
    smallest = 2 + config.ensemble  # the pending token, one candidate, one prompt token per stream
    sizes = [b for b in BUDGETS if smallest <= b <= config.max_tree_budget] or [smallest]
    cost = verify_cost(model, sizes)
    designs = {b: design_trees(accuracy, b, config.ensemble) for b in sizes}
    budget = max(sizes, key=lambda b: designs[b][1] / cost[b])
    return budget, designs[budget][0], designs[budget][1], cost


@register_method(
    "lm.spec.parallel_prompt",
    ParallelPromptConfig,
    category="lm-decode",
    families=("lm",),
    changes=("forward_passes",),
    paper="Hardware-Aware Parallel Prompt Decoding for Memory-Efficient Acceleration of LLM Inference",
    arxiv="2405.18628",
    catalogue_row=24,
    lossless=True,
)
class ParallelPrompt(SpeculativeMethod):
    def supports(self, bundle, device):
        reason = super().supports(bundle, device)
        if reason is None and not bundle.calibration_texts:
            reason = "needs calibration text to train its prompt tokens"
        return reason

    def apply(self, bundle, config):
        if config.prompt_tokens < 1 or config.ensemble < 1 or config.top_k < 1 or config.tree_budget < 0:
            raise ValueError("lm.spec.parallel_prompt: prompt_tokens, ensemble, top_k ≥ 1; tree_budget ≥ 0")
        prompts, accuracy, train_s, cached = prepare_prompts(bundle, config)
        began = time.perf_counter()
        budget, plans, tokens, cost = choose_budget(bundle.model, accuracy, config)
        setup_s = train_s + time.perf_counter() - began
        log.info(
            "parallel_prompt: tree budget %d (%.2f expected tokens per step), sizes %s",
            budget,
            tokens,
            [plan.tree.size for plan in plans],
        )
        return ParallelPromptRunner(
            bundle.model, config, prompts, accuracy, plans, budget, tokens, cost, setup_s, cached
        )

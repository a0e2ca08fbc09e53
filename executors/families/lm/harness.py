"""The LM family's hook on the measurement protocol: generation after held-out prompts.

Quality is measured through the model each method actually runs, never copied:
- every record holds the greedy token match against the reference (greedy workloads) and the
  held-out perplexity of the runner's own model (a compiled model is scored compiled);
- lossless methods are judged by the match under greedy decoding and, under sampling, by a
  distribution check: next-token histograms over fixed prompts and many seeds, total-variation
  distance to the reference's, beside the distance between two independent reference sample sets
  (the sampling noise floor) and its error — so a broken acceptance rule shows as a number;
- lossy methods are judged by the perplexity change (relative; negative = worse).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from executors.families.lm.model import decoder_of
from executors.families.lm.workloads import heldout_prompts, heldout_windows, perplexity
from executors.protocol import KindHarness, Prepared, Quality
from executors.registry import ModelBundle, model_device

PPL_WINDOWS, PPL_LENGTH = 8, 257
# The distribution check: DIST_PROMPTS prompts × DIST_SEEDS seeds × DIST_ROWS rows = samples of
# the first DIST_TOKENS generated tokens per prompt.
DIST_PROMPTS, DIST_PROMPT_LEN, DIST_TOKENS, DIST_SEEDS, DIST_ROWS = 4, 16, 3, 8, 16
REFERENCE_SEEDS, FLOOR_SEEDS = range(1000, 1000 + DIST_SEEDS), range(2000, 2000 + DIST_SEEDS)


@dataclass
class GenerationSession:
    prompts: torch.Tensor
    reference_samples: dict = field(default_factory=dict)  # seeds → histograms of the reference


def kv_cache_bytes(bundle: ModelBundle, workload) -> int:
    c = decoder_of(bundle.model).config
    tokens = workload.prompt_len + workload.gen_len
    return 2 * c.n_layers * workload.batch_size * c.n_kv_heads * tokens * c.head_dim * 4


def heldout_perplexity(prepared: Prepared, bundle: ModelBundle) -> float:
    """Perplexity of the runner's own model on held-out windows (once per prepared model)."""
    if "heldout_perplexity" not in prepared.quality:
        length = min(PPL_LENGTH, decoder_of(bundle.model).config.max_seq_len)
        windows = heldout_windows(bundle, PPL_WINDOWS, length).to(model_device(bundle))
        prepared.quality["heldout_perplexity"] = perplexity(prepared.applied_runner.model, windows)
    return prepared.quality["heldout_perplexity"]


def sample_histograms(runner, prompts: torch.Tensor, workload, seeds, vocab: int) -> torch.Tensor:
    """Counts [prompts, DIST_TOKENS, vocab] of the tokens sampled at each position."""
    counts = torch.zeros(len(prompts), DIST_TOKENS, vocab)
    for index, prompt in enumerate(prompts):
        rows = prompt[None].repeat(DIST_ROWS, 1)
        for seed in seeds:
            tokens = runner.generate(rows, DIST_TOKENS, sampling="sample", temperature=workload.temperature,
                                     seed=seed).tokens.cpu()  # fmt: skip
            for position in range(DIST_TOKENS):
                counts[index, position].index_add_(0, tokens[:, position], torch.ones(DIST_ROWS))
    return counts


def tv_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total-variation distance per (prompt, position) between two histograms of equal size."""
    return 0.5 * (a / a.sum(-1, keepdim=True) - b / b.sum(-1, keepdim=True)).abs().sum(-1)


def distribution_check(prepared: Prepared, baseline: Prepared, bundle: ModelBundle, workload, session) -> dict:
    """Sampled outputs of a method against the reference's: TV distance, noise floor, standard error."""
    key = ("distribution", workload.temperature)
    if key in prepared.quality:
        return prepared.quality[key]
    vocab = decoder_of(bundle.model).config.vocab_size
    prompts = heldout_prompts(bundle, DIST_PROMPTS, DIST_PROMPT_LEN, offset=7).to(session.prompts.device)
    if workload.temperature not in session.reference_samples:
        session.reference_samples[workload.temperature] = (
            sample_histograms(baseline.runner, prompts, workload, REFERENCE_SEEDS, vocab),
            sample_histograms(baseline.runner, prompts, workload, FLOOR_SEEDS, vocab),
        )
    reference, floor_set = session.reference_samples[workload.temperature]
    mine = sample_histograms(prepared.runner, prompts, workload, FLOOR_SEEDS, vocab)
    distance, floor = tv_distances(mine, reference), tv_distances(floor_set, reference)
    excess = (distance - floor).flatten()
    check = {
        "sampled_tv_distance": distance.mean().item(),
        "sampled_tv_floor": floor.mean().item(),
        "sampled_tv_excess": excess.mean().item(),
        "sampled_tv_stderr": (excess.std().item() / len(excess) ** 0.5) if len(excess) > 1 else 0.0,
        "sampled_tv_samples": DIST_SEEDS * DIST_ROWS,
        "sampled_tv_cells": len(excess),
    }
    prepared.quality[key] = check
    return check


class GenerateHarness(KindHarness):
    unit = "tok/s"

    def session(self, bundle, workload, device, baseline, warmup):
        return GenerationSession(heldout_prompts(bundle, workload.batch_size, workload.prompt_len).to(device))

    def call(self, runner, session, workload, seed):
        return runner.generate(
            session.prompts, workload.gen_len, sampling=workload.sampling, temperature=workload.temperature, seed=seed
        )

    def items(self, workload, session):
        return float(workload.batch_size * workload.gen_len)

    def working_bytes(self, bundle, workload, outputs):
        return kv_cache_bytes(bundle, workload)

    def quality(self, prepared, baseline, bundle, workload, session, outputs) -> Quality:
        ppl, base_ppl = heldout_perplexity(prepared, bundle), heldout_perplexity(baseline, bundle)
        figures: dict[str, float | None] = {"heldout_perplexity": ppl, "baseline_heldout_perplexity": base_ppl}
        if workload.sampling == "greedy":
            mine, reference = outputs[prepared.method_id][-1].tokens.cpu(), outputs[baseline.method_id][-1].tokens.cpu()
            match = (mine == reference).float()
            token_match = match.mean().item()
            figures.update(greedy_token_match=token_match, exact_sequence_match=match.all(1).float().mean().item())
            if prepared.lossless:
                return Quality("greedy_token_match", 1.0, token_match, token_match - 1.0, metrics=figures)
        else:
            figures.update(greedy_token_match=None, exact_sequence_match=None)
            check = distribution_check(prepared, baseline, bundle, workload, session)
            figures.update(check)
            if prepared.lossless:
                tv, floor = check["sampled_tv_distance"], check["sampled_tv_floor"]
                return Quality("sampled_tv_distance", floor, tv, floor - tv, metrics=figures)
        return Quality("heldout_perplexity", base_ppl, ppl, (base_ppl - ppl) / base_ppl, metrics=figures)

    def metrics(self, prepared, baseline, bundle, workload, session, outputs) -> dict:
        generation = outputs[prepared.method_id][-1]
        return {
            "forward_passes": generation.forward_passes,
            "forwards_per_token": generation.forward_passes / workload.gen_len,
            **generation.stats,
        }


def observe(runner, bundle: ModelBundle, window: int = 65) -> dict:
    """What the registry suite compares with the reference: logits of the runner's model on held-out
    windows, and a greedy generation with its forward passes (tests/executors/conformance.py)."""
    device = model_device(bundle)
    windows = heldout_windows(bundle, 2, window).to(device)
    generation = runner.generate(heldout_prompts(bundle, 4, 24).to(device), 16)
    with torch.inference_mode():
        logits = runner.model(windows[:, :-1])
    return {"outputs": logits, "tokens": generation.tokens, "forward_passes": generation.forward_passes}

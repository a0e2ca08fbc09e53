"""Words for what the store keeps as keys: metric, selector and split names with one-line
explanations, workloads as readable shapes, the advisor's feature names, and number formats.
The pages show these instead of raw ids; the keys stay in the markup for scripts and tests."""

from __future__ import annotations

import math
from datetime import datetime

METRICS = {
    "gap_closed": (
        "Gap closed",
        "share of the way from always using the single best method (0) to the oracle (1); below 0 is worse than it",
    ),
    "top1_tol": ("Top-1 within 3 %", "share of unseen tasks where the pick is within 3 % of the measured best"),
    "top1": ("Top-1 exact", "share of unseen tasks where the pick is the measured best method"),
    "mean_regret": ("Mean regret", "measured best speed-up ÷ speed-up of the pick, averaged; 1 is perfect"),
    "ndcg3": ("NDCG@3", "how well the top three of the ranking match the measured order; 1 is perfect"),
}
SELECTORS = {
    "lightgbm_plain": (
        "This advisor",
        "the LightGBM learner the advisor deploys, on the task and method features, with the training-range guard",
    ),
    "lightgbm": (
        "Inner-CV choice",
        "the guarded LightGBM learner, the pairwise vote or the single best method: whichever an inner "
        "cross-validation on the training folds found best",
    ),
    "lightgbm_unguarded": ("LightGBM, unguarded", "the same learner without the training-range guard"),
    "lightgbm_rank": ("LightGBM ranker", "LambdaRank: learns the order of methods per task"),
    "lightgbm_risk": ("LightGBM, risk-averse", "ranks by a pessimistic quantile of the predicted speed-up"),
    "pairwise": ("Pairwise voting", "one classifier per pair of methods, weighted by the gap, then a vote"),
    "gradient_boosting": ("Gradient boosting", "scikit-learn gradient boosting per method"),
    "random_forest": ("Random forest", "one random-forest regressor per method"),
    "knn": ("Nearest neighbours", "the best method of the most similar measured tasks"),
    "alors": ("ALORS", "matrix factorisation of tasks × methods, features mapped to the latent space"),
    "isac": ("ISAC", "clusters the tasks and uses each cluster's best method"),
    "sbs": ("Single best method", "the one method that is best on average over the training tasks"),
    "random": ("Random pick", "a method drawn at random: the floor"),
    "vbs": ("Oracle", "the measured best method of every task: the ceiling"),
}
SPLITS = {
    "model": "unseen models",
    "hardware": "unseen hardware",
    "random": "random tasks",
    "scenario": "the scenario's folds",
}
FEATURES = {
    "params": "model size",
    "layers": "model depth",
    "width": "model width",
    "dim": "model width",
    "ffn_dim": "FFN width",
    "heads": "attention heads",
    "kv_heads": "KV heads",
    "vocab": "vocabulary size",
    "context": "context length",
    "gqa_ratio": "grouped-query ratio",
    "batch_size": "batch size",
    "prompt_len": "prompt length",
    "gen_len": "tokens generated",
    "gen_share": "share of tokens generated",
    "mem_bw_gbs": "memory bandwidth",
    "fp32_gflops": "fp32 compute",
    "bf16_gflops": "bf16 compute",
    "flops_per_byte": "compute per byte of bandwidth",
    "ram_gb": "RAM",
    "price_per_hour": "price per hour",
    "n_parts": "number of combined methods",
}
FEATURE_SIDES = {"model": "model", "workload": "workload", "node": "node", "cfg": "setting", "method": "method"}
QUALITY = {
    "heldout_perplexity": "perplexity on held-out text",
    "greedy_token_match": "greedy tokens equal to the baseline's",
    "embedding_cosine": "embedding cosine to the baseline",
    "retrieval_accuracy": "passkey retrieval accuracy",
}

# Where a candidate's figures come from (advisor/recommend.py), as the Models page explains it.
BASIS = {
    "measured": "measured: this task was profiled with it",
    "interpolated": "predicted by the learner, inside what it was trained on",
    "guarded": "outside what the learner was trained on: the method's median over profiled tasks of this kind",
    "reference": "no acceleration: what the others are measured against",
}


def basis_words(basis: str) -> str:
    return BASIS.get(basis, basis)


def quality_words(metric: str | None) -> str:
    return QUALITY.get(metric or "", (metric or "").replace("_", " "))


def metric_name(key: str) -> str:
    return METRICS.get(key, (key, ""))[0]


def selector_name(key: str) -> str:
    return SELECTORS.get(key, (key.replace("_", " "), ""))[0]


def split_name(key: str) -> str:
    return SPLITS.get(key, key)


def workload_words(kind: str, shape: dict) -> str:
    """A workload as a person would say it ("batch 1 · 32-token prompt · 32 new tokens"), in its
    family's words (no kind: the default kind); a kind no family registers here (imported records)
    in the common columns'."""
    from executors.families import default_kind, get_kind, row_words

    try:
        return (get_kind(kind) if kind else default_kind()).words(shape)
    except ValueError:
        return row_words(shape)


def feature_words(name: str) -> str:
    """An advisor feature key in words: "model.d.ffn_dim" → "model: FFN width"."""
    if "=" in name:
        key, value = name.split("=", 1)
        if key == "method.part":
            return f"uses {value}"
        if key == "method.family":
            return f"method family: {value}"
        return f"{key.split('.')[-1].replace('_', ' ')} is {value}"
    side, _, rest = name.partition(".")
    owner, _, leaf = rest.rpartition(".")
    words = FEATURES.get(leaf or side, (leaf or side).replace("_", " "))
    if side == "cfg" and owner:  # a composite's knob: "cfg.quant.int8_dynamic.include_head"
        return f"setting of {owner}: {words}"
    return f"{FEATURE_SIDES.get(side, side)}: {words}" if rest else words


def reason(feature: str, effect: float) -> str:
    """A SHAP contribution on log speed-up as a change of the predicted speed-up."""
    change = math.exp(effect) - 1
    return f"{feature_words(feature)} {'+' if change >= 0 else '−'}{abs(change):.0%}"


def short_id(value: str | None, keep: int = 8) -> str:
    """An id cut to its kind and the first hex digits ("pro-3f9a1c2e…", "adv-…9a362b21"): enough to
    tell ids apart on a page; the whole id stays in the title and the Copy button."""
    if not value:
        return ""
    head, sep, tail = value.rpartition("-")
    if not sep:
        return value if len(value) <= keep + 6 else value[: keep + 4] + "…"
    prefix = f"{head.split('-')[0]}-…" if "-" in head or len(head) > 6 else f"{head}-"
    return prefix + (tail[:keep] + "…" if len(tail) > keep else tail)


def seconds(value: float | None) -> str:
    """A duration for people: 840 ms, 12.3 s, 2 min 11 s, 1 h 5 min."""
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60)} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"


def when(value: datetime | str | None) -> str:
    if not value:
        return "–"
    text = value.isoformat() if isinstance(value, datetime) else value
    return text[:19].replace("T", " ")

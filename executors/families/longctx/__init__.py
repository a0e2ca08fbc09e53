"""The `longctx` family: decoder LMs at 1k–8k tokens of context (`lm-longctx`), judged by
passkey retrieval hidden in corpus text. Its models are `lm` models; its zoo holds the
long-context fine-tunes.

workload.py the retrieval data, probes and workload · finetune.py the long zoo LMs ·
harness.py the protocol hook (retrieval quality, its floor).
"""

from __future__ import annotations

from pathlib import Path

from executors.families import Family, WorkloadKind, ZooEntry, register_family
from executors.families.lm import GENERATE
from executors.families.lm.checkpoints import save_lm
from executors.families.lm.harness import observe
from executors.families.lm.zoo import load_zoo
from executors.families.longctx.finetune import LONG_RECIPES, finetune_long
from executors.families.longctx.harness import LongContextHarness
from executors.families.longctx.workload import LongContextWorkload, describe, parse_grid


def build_long(name: str):
    def build(folder: Path, root: Path | None) -> dict:
        model, manifest = finetune_long(name, root)  # its base LM comes from the same zoo
        save_lm(model, folder)
        return manifest

    return build


def longctx_words(row) -> str:
    params = row.get("params") or {}
    context = params.get("context_len") or row.get("prompt_len")
    return f"long context · {context} tokens · {params.get('probes', '?')} passkey probes"


LONGCTX = WorkloadKind(
    name=LongContextWorkload.kind,
    family="longctx",
    workload=LongContextWorkload,
    reference="baseline",
    harness=LongContextHarness(),
    models=("lm",),
    keyword="longctx",
    parse=parse_grid,
    describe=describe,
    words=longctx_words,
    call_seconds=GENERATE.call_seconds,
)

register_family(
    Family(
        name="longctx",
        description="decoder LMs at 1k-8k tokens of context, judged by passkey retrieval (lm models)",
        runner_protocol="generate",
        kinds=(LONGCTX,),
        quality_metrics=("retrieval_accuracy", "longctx_perplexity"),
        # Past sparse attention's minimum budget, so a token-sparse method's logits can differ.
        hooks={"observe": lambda runner, bundle: observe(runner, bundle, window=160)},
        zoo=tuple(
            ZooEntry(
                name, "longctx", f"lm-1m fine-tuned to 8192 positions ({name})", load_zoo, build_long(name), 886_272
            )
            for name in LONG_RECIPES
        ),
    )
)

"""The long-context hook: the LM harness over passkey prompts, judged by retrieval.

Quality is passkey retrieval accuracy through the runner's own model (teacher-forced read-back,
`workload.retrieval_accuracy`), with perplexity at the context length beside it. A baseline that
retrieves at most `RETRIEVAL_FLOOR` of the probes sits at chance (a passkey byte is one of 14),
so no method can show a loss there: such records keep the figure but say it is uninformative.
"""

from __future__ import annotations

from executors.families.lm.harness import GenerateHarness, GenerationSession
from executors.families.lm.workloads import perplexity
from executors.families.longctx.workload import long_windows, retrieval_accuracy, retrieval_probes, timed_prompts
from executors.protocol import Quality

RETRIEVAL_FLOOR = 0.25  # 2 of 8 probes: within sampling error of chance


def retrieval_quality(prepared, bundle, workload) -> dict:
    """Passkey retrieval and held-out perplexity at this context, through the runner's model (once per task)."""
    key = ("retrieval", workload.id)
    if key not in prepared.quality:
        model = prepared.runner.model
        device = next(iter(bundle.model.parameters())).device
        probes = retrieval_probes(bundle, workload.probes, workload.prompt_len)
        scores = retrieval_accuracy(model, probes, workload.batch_size)
        windows = long_windows(bundle, workload.ppl_windows, workload.prompt_len + 1).to(device)
        prepared.quality[key] = {**scores, "longctx_perplexity": perplexity(model, windows, batch=1)}
    return prepared.quality[key]


class LongContextHarness(GenerateHarness):
    def session(self, bundle, workload, device, baseline, warmup):
        return GenerationSession(timed_prompts(bundle, workload).to(device))

    def quality(self, prepared, baseline, bundle, workload, session, outputs) -> Quality:
        generation = super().quality(prepared, baseline, bundle, workload, session, outputs)
        mine, base = retrieval_quality(prepared, bundle, workload), retrieval_quality(baseline, bundle, workload)
        figures = {**generation.metrics, **mine, **{f"baseline_{k}": v for k, v in base.items()}}
        accuracy, base_accuracy = mine["retrieval_accuracy"], base["retrieval_accuracy"]
        return Quality("retrieval_accuracy", base_accuracy, accuracy, accuracy - base_accuracy,
                       informative=base_accuracy > RETRIEVAL_FLOOR, metrics=figures)  # fmt: skip

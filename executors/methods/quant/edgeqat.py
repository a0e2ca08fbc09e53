"""`quant.qat.edgeqat`: EdgeQAT — entropy- and distribution-guided quantisation-aware training.

Paper: Shen et al., "EdgeQAT: Entropy and Distribution Guided Quantization-Aware Training for
the Acceleration of Lightweight LLMs on the Edge" (arXiv 2402.10787); mechanism as in its text
and the authors' training code (`modeling_llama_qat_distribution_guide.py`, `…_qat_mix.py`):

- Sub-8-bit QAT of weights, activations and the KV cache: every transformer linear fake-quantises
  its weight with a learned step per output channel (LSQ, `w_bits`) and its input activation
  (`a_bits`); the queries, keys and values are fake-quantised with learned steps (`kv_bits`).
- Token importance-aware adaptive bit widths (`executors.methods.quant.token_bits`): the
  `low_fraction` of tokens that give the first token the lowest attention logit get `a_low_bits`
  activations and `kv_low_bits` queries/keys/values (the paper's A8 with A4 for half the tokens).
- Loss = α·CE(next token) + (1−α)·T²·KL(teacher ‖ student) (the full-precision model is the
  teacher) + the paper's two terms:
  * entropy loss on the quantised queries and keys: quantisation collapses their spread, so
    maximise their (Gaussian) entropy, ∝ log variance — `−λ_e · log Σ_layers Σ [log(1+var q̂)
    + log(1+var k̂)]` (variance over the head dimension, as in the authors' code);
  * distribution loss on the attention maps: `−λ_d · log(mean cosine(A_quant, A_fp))` per
    layer. (The authors' code adds `+log Σ cos`, which would push the maps apart; the paper's
    text asks for them to match, which is what is implemented here.)
- Deployment. W8A8 without mixed bits runs real int8 on CPU: each linear becomes torch's dynamic
  int8 Linear built from the *learned* per-channel weight steps (the codes are exactly the
  trained fake-quant codes), activations quantised per batch by that kernel — or per token
  (`per_token_activations`: each row scaled to its own range first, as `quant.int8_outlier`
  does) — and training fake-quantises activations the same way. Every other setting deploys the
  trained grid exactly: weights packed at `w_bits` (`accel_kernels.quant_pack`, unpacked per call),
  activations fake-quantised per token or tensor with the token-adaptive widths. There is no CPU
  kernel for those, so they are a quality and memory result, not a speed one. q/k/v keep their
  learned grids, applied in fp32: the KV cache holds low-bit values in fp32 storage.

Deviations: activations are quantised dynamically (the authors learn static LSQ steps and zero
points); importance thresholds are calibrated per layer (see token_bits); the initial LSQ steps
are max|x|/Qp rather than LSQ's 2·mean|x|/√Qp (at 8 bits that init is ~4x coarser than PTQ's).
Training is seeded, tiny (tens of steps on calibration text, never the held-out text), cached as
safetensors keyed by the model's weights and the config; its wall time is the setup time.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from executors.caching import cached_tensors, state_without_tied_head
from executors.families import default_runner
from executors.families.lm.model import DecoderLM
from executors.families.lm.workloads import calibration_windows
from executors.methods.quant.edgeqat_layers import (
    QATAttention,
    attention_modules,
    build_student,
    deploy,
    init_grids,
)
from executors.methods.quant.int8_dynamic import int8_engine_missing
from executors.registry import Method, MethodConfig, bounded, register_method
from executors.training import Schedule, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeQATConfig(MethodConfig):
    w_bits: int = bounded(8, 2, 8)
    a_bits: int = bounded(8, 2, 8)
    kv_bits: int = bounded(8, 2, 16)  # queries, keys and values; 16 leaves them in float
    a_low_bits: int = bounded(8, 2, 8)  # activations of the low-importance tokens (paper: 4); = a_bits: no mixing
    kv_low_bits: int = bounded(8, 2, 16)  # their queries, keys and values (paper: 4)
    low_fraction: float = bounded(0.5, 0.0, 1.0)  # share of tokens below the importance threshold
    per_token_activations: bool = False  # one activation scale per token instead of one per tensor
    train_windows: int = bounded(16, 1, 4096)
    train_len: int = bounded(128, 8, 4096)
    steps: int = bounded(40, 0, 100_000)
    batch: int = bounded(4, 1, 256)
    lr: float = bounded(1e-5, 0.0, 1.0)  # weights: small, the model is already trained
    lr_step: float = bounded(1e-5, 0.0, 1.0)  # LSQ steps are ~max|w|/127: Adam moves each by ~lr per update
    kd_alpha: float = bounded(0.5, 0.0, 1.0)  # weight of the label loss; 1 − α goes to distillation (paper: 0.5)
    temperature: float = bounded(2.0, 0.1, 100.0)
    entropy_weight: float = bounded(0.5, 0.0, 100.0)  # paper's recipe
    distribution_weight: float = bounded(1.0, 0.0, 100.0)
    seed: int = 0
    version: int = 1

    @property
    def int8_kernels(self) -> bool:
        """Whether the deployed model runs on torch's int8 kernels (W8A8, no mixed bits) or fake-quantised."""
        return self.w_bits == 8 and self.a_bits == 8 and self.a_low_bits == 8

    @property
    def mixed(self) -> bool:
        fewer = self.a_low_bits < self.a_bits or self.kv_low_bits < self.kv_bits
        return fewer and self.low_fraction > 0


def recorded(attention: QATAttention) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    assert attention.recorded is not None, "the attention records (q, k, probs) in a forward with `record` on"
    return attention.recorded


def entropy_loss(student: DecoderLM) -> torch.Tensor:
    total = sum(
        torch.log1p(q.var(dim=-1)).sum() + torch.log1p(k.var(dim=-1)).sum()
        for q, k, _ in map(recorded, attention_modules(student))
    )
    assert isinstance(total, torch.Tensor), "a student has QAT attention in every block"
    return -torch.log(total)


def distribution_loss(student: DecoderLM, teacher: DecoderLM) -> torch.Tensor:
    losses = []
    for mine, theirs in zip(attention_modules(student), attention_modules(teacher), strict=False):
        probs, reference = recorded(mine)[2], recorded(theirs)[2]
        cosine = F.cosine_similarity(probs.flatten(2), reference.flatten(2), dim=-1)  # per (batch, head)
        losses.append(-torch.log(cosine.mean().clamp_min(1e-6)))
    return torch.stack(losses).sum()


def qat_loss(student, teacher, inputs, targets, config: EdgeQATConfig) -> tuple[torch.Tensor, dict]:
    with torch.no_grad():
        teacher_logits = teacher(inputs)
    logits = student(inputs)
    vocab = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
    t = config.temperature
    kd = (
        F.kl_div(
            F.log_softmax(logits / t, -1).reshape(-1, vocab),
            F.softmax(teacher_logits / t, -1).reshape(-1, vocab),
            reduction="batchmean",
        )
        * t
        * t
    )
    entropy, distribution = entropy_loss(student), distribution_loss(student, teacher)
    loss = (
        config.kd_alpha * ce
        + (1 - config.kd_alpha) * kd
        + config.entropy_weight * entropy
        + config.distribution_weight * distribution
    )
    return loss, {"ce": ce.item(), "kd": kd.item(), "entropy": entropy.item(), "distribution": distribution.item()}


def train_student(model: DecoderLM, tokens: torch.Tensor, config: EdgeQATConfig) -> tuple[DecoderLM, dict]:
    torch.manual_seed(config.seed)
    student, teacher = build_student(model, config), build_student(model, config, quantize_linears=False)
    for module in attention_modules(student) + attention_modules(teacher):
        module.record = True
    init_grids(student, tokens[: config.batch, :-1], config)
    steps = [p for n, p in student.named_parameters() if n.endswith(("step", "steps"))]
    weights = [p for n, p in student.named_parameters() if not n.endswith(("step", "steps"))]
    groups = [
        {"params": weights, "lr": config.lr, "weight_decay": 0.0},
        {"params": steps, "lr": config.lr_step, "weight_decay": 0.0},
    ]
    parts: dict = {}

    def step_loss(step: int, generator: torch.Generator) -> torch.Tensor:
        nonlocal parts
        rows = torch.randint(len(tokens), (config.batch,), generator=generator)
        loss, parts = qat_loss(student, teacher, tokens[rows, :-1], tokens[rows, 1:], config)
        return loss

    schedule = Schedule(config.lr, config.steps, decay="constant", clip=1.0)
    train(groups, step_loss, schedule, seed=config.seed, modules=[student], name="edgeqat", log_every=20,
          clip_params=weights)  # fmt: skip
    student.eval()
    for module in attention_modules(student):
        module.record, module.recorded = False, None
    return student, parts


def prepare_student(bundle, config: EdgeQATConfig) -> tuple[DecoderLM, float, bool, dict]:
    """The trained QAT student from the cache, or trained now (then cached)."""
    model = bundle.model
    length = min(config.train_len, model.config.max_seq_len - 1) + 1
    trained: list[DecoderLM] = []

    def build():
        tokens = calibration_windows(bundle, config.train_windows, length)
        if len(tokens) == 0:
            raise ValueError(f"quant.qat.edgeqat: no calibration text of {config.train_len + 1} tokens")
        with torch.inference_mode(False), torch.enable_grad():  # a caller may hold inference mode
            student, parts = train_student(model, tokens, config)
        trained.append(student)
        log.info("edgeqat: final losses %s", parts)
        return state_without_tied_head(student), {"final_losses": parts}

    cached = cached_tensors("edgeqat", model, asdict(config), build)
    if not cached.hit:
        return trained[0], cached.build_s, False, cached.meta["final_losses"]
    student = build_student(model, config)
    missing, unexpected = student.load_state_dict(cached.tensors, strict=False)
    if unexpected or set(missing) - {"output.weight"}:  # the tied head is the embedding
        raise ValueError("quant.qat.edgeqat: the cached student does not fit this model")
    return student.eval(), cached.build_s, True, cached.meta["final_losses"]


@register_method(
    "quant.qat.edgeqat",
    EdgeQATConfig,
    category="quantization",
    families=("lm",),
    changes=("weights", "weight_bytes", "outputs"),
    paper="EdgeQAT: Entropy and Distribution Guided Quantization-Aware Training for the "
    "Acceleration of Lightweight LLMs on the Edge",
    arxiv="2402.10787",
    catalogue_row=6,
    lossless=False,
    phase="training",
)
class EdgeQAT(Method):
    order = 10  # a weight transform: before compilation and decoding strategies
    composes_with = frozenset({"baseline", "sys.compile", "lm.spec.swift", "lm.spec.medusa", "lm.parallel.jacobi"})
    requirements = {"devices": ["cpu"]}

    def supports(self, bundle, device):
        if device.type != "cpu":
            return "deploys through torch's dynamic int8 linear kernels or their CPU fake-quant path"
        if not {"kv_cache", "next_token_loss"} <= bundle.capabilities:
            return "trains with next-token and attention-map losses of a decoder LM; this model is not one"
        if not bundle.calibration_texts:
            return "needs calibration text to train on"
        return int8_engine_missing()

    def apply(self, bundle, config):
        if not (2 <= config.kv_bits <= 8 or config.kv_bits == 16) or config.kv_low_bits > config.kv_bits:
            raise ValueError("quant.qat.edgeqat: kv_bits must be 2..8 or 16, and kv_low_bits at most kv_bits")
        if config.a_low_bits > config.a_bits:
            raise ValueError("quant.qat.edgeqat: a_low_bits must be at most a_bits")
        student, train_s, cached, losses = prepare_student(bundle, config)
        deployed = deploy(student, config)
        kernel = (
            "torch dynamic int8 linear (x86/fbgemm), learned per-channel weight steps"
            if config.int8_kernels
            else f"{config.w_bits}-bit packed weights, unpacked per call; fake-quantised activations"
        )
        return default_runner(
            bundle,
            deployed,
            {
                "train_s": round(train_s, 3),
                "train_cached": cached,
                "train_steps": config.steps,
                "final_train_losses": {k: round(v, 4) for k, v in losses.items()},
                "kernel_backend": kernel,
                "bits": {
                    "w": config.w_bits,
                    "a": config.a_bits,
                    "kv": config.kv_bits,
                    "a_low": config.a_low_bits,
                    "kv_low": config.kv_low_bits,
                    "low_fraction": config.low_fraction if config.mixed else 0.0,
                },  # fmt: skip
                "activation_scales": "per token" if config.per_token_activations else "per tensor",
                "kv_quant": f"{config.kv_bits}-bit learned grid, fp32 storage" if config.kv_bits < 16 else "none",
            },
        )

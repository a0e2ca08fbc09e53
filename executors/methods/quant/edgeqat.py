"""`quant.qat.edgeqat`: EdgeQAT — entropy- and distribution-guided quantisation-aware training.

Paper: Shen et al., "EdgeQAT: Entropy and Distribution Guided Quantization-Aware Training for
the Acceleration of Lightweight LLMs on the Edge" (arXiv 2402.10787); mechanism as in its text
and the authors' training code:

- W8A8 (+ KV8) QAT. Every transformer linear fake-quantises its weight with a learned step per
  output channel (LSQ) and its input activation to 8 bits; the queries, keys and values are
  fake-quantised with learned steps (the quantised q·kᵀ and KV cache).
- Loss = α·CE(next token) + (1−α)·T²·KL(teacher ‖ student) (the full-precision model is the
  teacher) + the paper's two terms:
  * entropy loss on the quantised queries and keys: quantisation collapses their spread, so
    maximise their (Gaussian) entropy, ∝ log variance — `−λ_e · log Σ_layers Σ [log(1+var q̂)
    + log(1+var k̂)]` (variance over the head dimension, as in the authors' code);
  * distribution loss on the attention maps: `−λ_d · log(mean cosine(A_quant, A_fp))` per
    layer. (The authors' code adds `+log Σ cos`, which would push the maps apart; the paper's
    text asks for them to match, which is what is implemented here.)
- Deployment runs real int8 on CPU: each linear becomes torch's dynamic int8 Linear built from
  the *learned* per-channel weight steps (the codes are exactly the trained fake-quant codes);
  activations are quantised per batch by that kernel, so training fake-quantises activations
  the same way (dynamic per tensor). q/k/v keep their learned 8-bit grid, applied in fp32: the
  KV cache holds 8-bit values but is not stored as int8 (no memory saving is claimed for it).

Training is seeded, tiny (tens of steps on calibration text, never the held-out text), cached as
safetensors keyed by the model's weights and the config; its wall time is the setup time.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from executors.caching import cached_tensors, state_without_tied_head
from executors.families import default_runner
from executors.families.lm.model import Attention, DecoderLM, apply_rotary
from executors.families.lm.workloads import calibration_windows
from executors.methods.quant.fakequant import absmax_step, fake_quant_per_token, lsq
from executors.registry import Method, MethodConfig, register_method
from executors.training import Schedule, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeQATConfig(MethodConfig):
    w_bits: int = 8
    a_bits: int = 8
    kv_bits: int = 8  # queries, keys and values; 16 leaves them in float
    train_windows: int = 16
    train_len: int = 128
    steps: int = 40
    batch: int = 4
    lr: float = 1e-5  # weights: small, the model is already trained
    lr_step: float = 1e-5  # LSQ steps are ~max|w|/127: Adam moves each by ~lr per update
    kd_alpha: float = 0.5  # weight of the label loss; 1 − α goes to distillation (paper: 0.5)
    temperature: float = 2.0
    entropy_weight: float = 0.5  # paper's recipe
    distribution_weight: float = 1.0
    seed: int = 0
    version: int = 1


def fake_quant_per_tensor(x: torch.Tensor, bits: int) -> torch.Tensor:
    """What a dynamic int8 kernel does to its input: one asymmetric grid for the whole tensor."""
    return fake_quant_per_token(x.reshape(1, -1), bits).reshape(x.shape)


class QATLinear(nn.Module):
    """Trainable weight with an LSQ step per output channel; input fake-quantised per tensor."""

    def __init__(self, linear: nn.Linear, config: EdgeQATConfig):
        super().__init__()
        self.w_bits, self.a_bits = config.w_bits, config.a_bits
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.step = nn.Parameter(absmax_step(self.weight, config.w_bits, dim=1))

    def quantized_weight(self) -> torch.Tensor:
        return lsq(self.weight, self.step[:, None], self.w_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quant_per_tensor(x, self.a_bits), self.quantized_weight(), self.bias)

    def to_int8(self) -> nn.Module:
        """torch's dynamic int8 Linear holding exactly the trained codes and steps."""
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

        if self.w_bits != 8:
            raise ValueError("the CPU int8 kernels deploy 8-bit weights only")
        out_features, in_features = self.weight.shape
        layer = DynamicInt8Linear(in_features, out_features, bias_=self.bias is not None, dtype=torch.qint8)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors warn they are deprecated; the kernels work
            qweight = torch.quantize_per_channel(
                self.weight.detach(),
                self.step.detach().double(),
                torch.zeros(out_features, dtype=torch.long),
                0,
                torch.qint8,
            )
            layer.set_weight_bias(qweight, None if self.bias is None else self.bias.detach().clone())
        return layer


class QATAttention(Attention):
    """The decoder's attention with q/k/v on a learned 8-bit grid; can record what the losses need."""

    def __init__(self, attention: Attention, kv_bits: int):
        nn.Module.__init__(self)
        self.n_heads, self.n_kv_heads, self.head_dim = attention.n_heads, attention.n_kv_heads, attention.head_dim
        self.wq, self.wk, self.wv, self.wo = attention.wq, attention.wk, attention.wv, attention.wo
        self.kv_bits = kv_bits
        self.steps = nn.Parameter(torch.ones(3))  # q, k, v; set from data by `init_steps`
        self.record = False
        self.recorded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def quant(self, x: torch.Tensor, which: int) -> torch.Tensor:
        if self.kv_bits >= 16:
            return x
        if torch.is_grad_enabled() and self.steps.requires_grad:
            return lsq(x, self.steps[which], self.kv_bits)
        # Deployed: the same grid in one fused op (LSQ's autograd plumbing costs a decode step dearly).
        bound = 2 ** (self.kv_bits - 1)
        return torch.fake_quantize_per_tensor_affine(x, float(self.steps[which]), 0, -bound, bound - 1)

    def forward(self, x, cos, sin, layer_cache, start, mask):
        batch, steps, _ = x.shape
        q = self.wq(x).view(batch, steps, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = self.quant(q, 0), self.quant(k, 1), self.quant(v, 2)
        if self.record:  # training: explicit attention map for the distribution loss
            keys = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            values = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            causal = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
            probs = (q @ keys.transpose(-1, -2) / self.head_dim**0.5).masked_fill(~causal, float("-inf")).softmax(-1)
            self.recorded = (q, k, probs)
            return self.wo((probs @ values).transpose(1, 2).reshape(batch, steps, -1))
        if layer_cache is not None:  # decoding: the same cache handling as executors.families.lm.model.Attention
            cache_k, cache_v = layer_cache
            cache_k[:, :, start : start + steps] = k
            cache_v[:, :, start : start + steps] = v
            k, v = cache_k[:, :, : start + steps], cache_v[:, :, : start + steps]
        gqa = self.n_heads != self.n_kv_heads
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and steps > 1, enable_gqa=gqa
        )
        return self.wo(out.transpose(1, 2).reshape(batch, steps, -1))


def attention_modules(model: DecoderLM) -> list[QATAttention]:
    return [block.attention for block in model.layers if isinstance(block.attention, QATAttention)]


def build_student(model: DecoderLM, config: EdgeQATConfig, quantize_linears: bool = True) -> DecoderLM:
    """A copy whose attention records maps; with `quantize_linears`, every block linear is a QATLinear."""
    student = copy.deepcopy(model)
    for block in student.layers:
        if quantize_linears:
            for parent in (block.attention, block.feed_forward):
                for name, child in list(parent.named_children()):
                    if isinstance(child, nn.Linear):
                        setattr(parent, name, QATLinear(child, config))
        block.attention = QATAttention(block.attention, config.kv_bits if quantize_linears else 16)
    return student


def init_steps(student: DecoderLM, tokens: torch.Tensor) -> None:
    """Data-driven init of the q/k/v steps (absmax) from one forward pass."""
    captured: dict[nn.Module, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, m=m: captured.__setitem__(m, out))
        for a in attention_modules(student)
        for m in (a.wq, a.wk, a.wv)
    ]
    with torch.no_grad():
        student(tokens)
        for hook in hooks:
            hook.remove()
        for attention in attention_modules(student):
            values = [captured[attention.wq], captured[attention.wk], captured[attention.wv]]
            attention.steps.copy_(torch.stack([absmax_step(v, attention.kv_bits) for v in values]))


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
    init_steps(student, tokens[: config.batch, :-1])
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


def deploy(student: DecoderLM) -> DecoderLM:
    """QAT linears → int8 kernels; steps become fixed; nothing trainable is left."""
    deployed = copy.deepcopy(student)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager-mode quantized modules warn they are deprecated; they work
        for block in deployed.layers:
            for parent in (block.attention, block.feed_forward):
                for name, child in list(parent.named_children()):
                    if isinstance(child, QATLinear):
                        setattr(parent, name, child.to_int8())
    for p in deployed.parameters():
        p.requires_grad_(False)
    return deployed


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
            return "deploys through torch's dynamic int8 linear kernels, which run on CPU only"
        if not {"kv_cache", "next_token_loss"} <= bundle.capabilities:
            return "trains with next-token and attention-map losses of a decoder LM; this model is not one"
        if (
            "x86" not in torch.backends.quantized.supported_engines
            and "fbgemm" not in torch.backends.quantized.supported_engines
        ):
            return "no x86/fbgemm quantized engine in this torch build"
        if not bundle.calibration_texts:
            return "needs calibration text to train on"
        return None

    def apply(self, bundle, config):
        if config.w_bits != 8 or config.a_bits != 8 or config.kv_bits not in (8, 16):
            raise ValueError("quant.qat.edgeqat deploys W8A8 with kv_bits 8 or 16 on CPU int8 kernels")
        student, train_s, cached, losses = prepare_student(bundle, config)
        return default_runner(
            bundle,
            deploy(student),
            {
                "train_s": round(train_s, 3),
                "train_cached": cached,
                "train_steps": config.steps,
                "final_train_losses": {k: round(v, 4) for k, v in losses.items()},
                "kernel_backend": "torch dynamic int8 linear (x86/fbgemm), learned per-channel weight steps",
                "kv_quant": f"{config.kv_bits}-bit learned grid, fp32 storage" if config.kv_bits < 16 else "none",
            },
        )

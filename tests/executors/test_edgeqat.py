"""EdgeQAT: LSQ grids deploy exactly into int8 kernels; the paper's losses; cached training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from executors.caching import cache_file
from executors.families.lm.decoding import PlainDecoder
from executors.families.lm.workloads import calibration_windows
from executors.methods.quant.edgeqat import EdgeQATConfig, distribution_loss, entropy_loss, qat_loss, recorded
from executors.methods.quant.edgeqat_layers import (
    DeployedLowBitLinear,
    QATLinear,
    attention_modules,
    build_student,
    deploy,
    init_grids,
)
from executors.methods.quant.fakequant import lsq
from executors.methods.quant.token_bits import TokenBits, importance, mixed_fake_quant
from executors.registry import get_method

SMALL = EdgeQATConfig(steps=3, batch=2, train_windows=4, train_len=32)


def test_lsq_passes_gradients_to_input_and_step():
    x = torch.randn(64, requires_grad=True)
    step = torch.tensor(0.05, requires_grad=True)
    out = lsq(x, step, 8)
    assert torch.allclose(out / step.detach(), (out / step.detach()).round(), atol=1e-4), "values on the grid"
    out.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and step.grad.abs() > 0


def test_deployed_int8_linear_holds_exactly_the_trained_codes():
    torch.manual_seed(0)
    qat = QATLinear(nn.Linear(48, 16), EdgeQATConfig(), TokenBits(), None)
    with torch.no_grad():
        qat.step.mul_(1.3)  # a "learned" step that is not absmax/127
    int8 = qat.to_int8()
    torch.testing.assert_close(int8.int8.weight().dequantize(), qat.quantized_weight().detach(), atol=1e-6, rtol=0)
    x = torch.randn(4, 48)
    torch.testing.assert_close(int8(x), qat(x).detach(), atol=0.05, rtol=0.05)  # activations: per-batch int8


def test_losses_follow_the_paper(tiny):
    tokens = calibration_windows(tiny, 2, 33)
    student, teacher = build_student(tiny.model, SMALL), build_student(tiny.model, SMALL, quantize_linears=False)
    for module in attention_modules(student) + attention_modules(teacher):
        module.record = True
    loss, parts = qat_loss(student, teacher, tokens[:, :-1], tokens[:, 1:], SMALL)
    assert set(parts) == {"ce", "kd", "entropy", "distribution"}
    assert 0 <= parts["distribution"] < 0.1, "quantised and FP attention maps start almost equal"
    same = distribution_loss(teacher, teacher)
    assert abs(same.item()) < 1e-5
    *_, probs = recorded(attention_modules(student)[0])
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5) and probs.triu(1).abs().max() == 0
    before = entropy_loss(student)
    with torch.no_grad():
        for module in attention_modules(student):
            q, k, probs = recorded(module)
            module.recorded = (q * 2, k * 2, probs)
    assert entropy_loss(student) < before, "spreading q and k out (more entropy) lowers the loss"
    loss.backward()
    assert attention_modules(student)[0].steps.grad is not None


def test_apply_trains_once_deploys_int8_and_caches(tiny):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    method = get_method("quant.qat.edgeqat")
    first = method.apply(tiny, SMALL)
    assert isinstance(first, PlainDecoder), "a weight transform runs on the family's plain decoder"
    assert isinstance(first.model.layers[0].feed_forward.w1.int8, DynamicInt8Linear)
    assert type(first.model.output) is nn.Linear
    assert not first.stats["train_cached"] and first.stats["train_s"] > 0
    assert cache_file("edgeqat", tiny.model, dataclasses.asdict(SMALL)).exists()
    again = method.apply(tiny, SMALL)
    assert isinstance(again, PlainDecoder)
    assert again.stats["train_cached"] and again.stats["train_s"] == first.stats["train_s"]
    prompts = torch.tensor([tiny.tokenizer.encode(t)[:16] for t in tiny.heldout_texts[:3]])
    assert torch.equal(first.generate(prompts, 8).tokens, again.generate(prompts, 8).tokens)
    trained = dict(first.model.named_buffers()) | dict(first.model.named_parameters())
    assert not any(p.requires_grad for p in first.model.parameters())
    assert any("steps" in name for name in trained)


def test_refusals_are_reasons(tiny):
    method = get_method("quant.qat.edgeqat")
    assert "CPU" in method.supports(tiny, torch.device("cuda"))
    with pytest.raises(ValueError, match="a_low_bits"):
        method.apply(tiny, EdgeQATConfig(a_bits=4, a_low_bits=8))
    assert deploy(build_student(tiny.model, SMALL), SMALL).layers[0].attention.kv_bits == 8


def test_deployed_qkv_grid_is_the_trained_one(tiny):
    deployed = deploy(build_student(tiny.model, SMALL), SMALL)
    attention = deployed.layers[0].attention
    with torch.no_grad():
        attention.steps.copy_(torch.tensor([0.02, 0.03, 0.05]))
    x = torch.randn(2, 4, 7, 16)
    with torch.no_grad():
        fused = attention.quant(x, 1)
    torch.testing.assert_close(fused, lsq(x, torch.tensor(0.03), 8), atol=1e-6, rtol=0)
    assert fused.unique().numel() <= 256


PAPER = EdgeQATConfig(w_bits=4, a_bits=8, a_low_bits=4, kv_bits=8, kv_low_bits=4, per_token_activations=True,
                      steps=3, batch=2, train_windows=4, train_len=32)  # fmt: skip


def test_importance_is_the_attention_logit_to_the_first_token():
    torch.manual_seed(0)
    q, first_key = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 8)  # 4 query heads share 2 key heads
    keys = first_key.repeat_interleave(2, dim=1)
    expected = sum((q[:, h] @ keys[:, h, :, None]).squeeze(-1) for h in range(4)) / 8**0.5
    torch.testing.assert_close(importance(q, first_key), expected)


def test_low_importance_tokens_get_fewer_levels():
    torch.manual_seed(1)
    x = torch.randn(1, 6, 64)
    low = torch.tensor([[True, False, True, False, False, True]])
    out = mixed_fake_quant(x, 8, 4, low, per_token=True)
    levels = [out[0, t].unique().numel() for t in range(6)]
    assert all(levels[t] <= 16 for t in (0, 2, 5)) and all(levels[t] > 16 for t in (1, 3, 4))


def test_thresholds_put_the_asked_share_of_calibration_tokens_in_low_bits(tiny):
    tokens = calibration_windows(tiny, 4, 64)
    student = build_student(tiny.model, PAPER)
    init_grids(student, tokens, PAPER)
    seen = []
    for module in attention_modules(student):
        module.register_forward_hook(lambda mod, args, out: seen.append(mod.token_bits.current.float().mean().item()))
    with torch.no_grad():
        student(tokens)
    assert len(seen) == tiny.model.config.n_layers
    assert all(0.4 < share < 0.6 for share in seen), seen  # low_fraction 0.5, on the calibration tokens


@pytest.mark.slow
def test_sub_8_bit_deploys_exactly_the_trained_grid_in_packed_bits(tiny):
    tokens = calibration_windows(tiny, 4, 33)
    student = build_student(tiny.model, PAPER)
    init_grids(student, tokens[:, :-1], PAPER)
    deployed = deploy(student.eval(), PAPER)
    layer = deployed.layers[1].feed_forward.w2
    assert isinstance(layer, DeployedLowBitLinear) and layer.packed.bits == 4
    assert layer.packed.packed.numel() * 8 == 4 * layer.packed.in_features * layer.packed.out_features
    with torch.no_grad():
        trained = student.layers[1].feed_forward.w2.quantized_weight()
        torch.testing.assert_close(layer.packed.dequantized(), trained, atol=1e-6, rtol=0)
        torch.testing.assert_close(deployed(tokens), student(tokens), atol=1e-4, rtol=1e-4)

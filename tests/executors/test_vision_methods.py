"""The vision methods' mechanisms, each checked where a wrong implementation would differ: token
counts and sizes of the token reducers, GlobalCom²'s per-crop budget, 2:4 masks, fixed-point
codes, Q-HyViT's bridge blocks, GBNN's exits, DisWOT's proxy and budget, the exported runtimes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from executors.families import default_runner, get_family
from executors.families.vision.harness import accuracy, inputs
from executors.families.vision.models import ImageClassifier, build_net
from executors.families.vision.workload import VisionWorkload
from executors.methods.distill.diswot import class_maps, diswot_score, gram
from executors.methods.quant.layers import FakeQuant, QuantLayer, two_four_mask
from executors.methods.quant.q_hyvit import is_bridge, units
from executors.methods.tokens.engine import BlockState, merge_pairs
from executors.methods.tokens.globalcom2 import crop_scales, quotas
from executors.methods.tokens.pyramid_drop import stage_ends
from executors.registry import default_config, get_method

WHOLE, VIEWS = VisionWorkload(8, 16), VisionWorkload(8, 32, crops=4)


@pytest.fixture(scope="module")
def vit(zoo_root):
    build = get_family("vision").fixture
    assert build is not None
    return build(zoo_root)


def apply(bundle, method_id: str, **changes):
    return get_method(method_id).apply(bundle, dataclasses.replace(default_config(method_id), **changes))


def logits(runner, bundle, workload=WHOLE) -> torch.Tensor:
    return runner.classify(inputs(bundle, workload, workload.batch_size))


def state(tokens: int, width: int = 8, seed: int = 0) -> BlockState:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, tokens, width, generator=generator)
    return BlockState(0, tokens - 1, x, None, torch.randn(2, tokens, 4, generator=generator), None)


def test_bipartite_merging_keeps_the_class_token_and_conserves_patch_counts():
    before = state(17)
    x, size = merge_pairs(before, 5)
    assert x.shape == (2, 12, 8) and size is not None and size.shape == (2, 12, 1)
    assert torch.equal(size.sum(dim=1).flatten(), torch.full((2,), 17.0))
    assert torch.allclose(x[:, 0], before.x[:, 0]), "the class token is never merged"
    # a size-weighted average: the tokens' total mass (size × value) is what it was
    assert torch.allclose((x * size).sum(1), before.x.sum(1), atol=1e-5)


def test_tome_merges_r_tokens_per_block_on_whole_images_and_views(vit):
    runner = apply(vit, "tok.tome", r=2)
    logits(runner, vit)
    assert runner.model.last_tokens == 17 - 4 * 2
    logits(runner, vit, VIEWS)
    assert runner.model.last_tokens == 13 + 4 * 12 - 2 * 2  # 2 per view block, then 2 per joined block


def test_turbo_without_semantic_weight_is_tome_and_with_it_merges_differently(vit):
    tome = logits(apply(vit, "tok.tome", r=3), vit)
    assert torch.allclose(logits(apply(vit, "tok.turbo", r=3, alpha=0.0), vit), tome, atol=1e-5)
    assert not torch.allclose(logits(apply(vit, "tok.turbo", r=3, alpha=5.0), vit), tome, atol=1e-4)


def test_pyramid_drop_keeps_a_pyramid_of_tokens(vit):
    assert stage_ends(4, 3) == [0, 2] and stage_ends(12, 4) == [2, 5, 8]
    runner = apply(vit, "tok.pyramid_drop", stages=3, ratio=0.5)
    logits(runner, vit)
    assert runner.model.last_tokens == 1 + 4  # 16 patches → 8 after block 1 → 4 after block 3
    with pytest.raises(ValueError, match="stages"):
        apply(vit, "tok.pyramid_drop", stages=5)


def test_globalcom2_gives_informative_crops_more_tokens_within_the_budget(vit):
    scales = crop_scales(torch.tensor([[0.7, 0.1, 0.1, 0.1]]), retention=0.25, temperature=0.1)
    assert scales[0, 0] > 0.25 > scales[0, 1] and torch.allclose(scales.mean(), torch.tensor(0.25), atol=0.02)
    quota = quotas(scales, per_crop=16, budget=16)
    assert quota.sum() == 16 and quota[0, 0] > quota[0, 1] and (quota <= 16).all()
    capped = quotas(torch.tensor([[1.0, 1e-6, 1e-6, 1e-6]]), per_crop=4, budget=8)
    assert capped.max() == 4 and capped.sum() == 8  # a crop holds at most its tokens; the rest go elsewhere
    runner = apply(vit, "tok.globalcom2", retention=0.25)
    reference = default_runner(vit, vit.model)
    assert torch.allclose(logits(runner, vit), logits(reference, vit), atol=1e-5), "one view: nothing to command"
    logits(runner, vit, VIEWS)
    assert runner.model.last_tokens == 1 + 4 + 16  # thumbnail: class + 25 % of 16; crops: 25 % of 64
    assert not torch.allclose(logits(runner, vit, VIEWS), logits(reference, vit, VIEWS))


def test_two_four_masks_keep_the_two_largest_of_every_four():
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -0.2, 1.0]])
    assert two_four_mask(weight).tolist() == [[False, True, True, False, True, False, False, True]]
    conv = torch.randn(6, 4, 3, 3)
    mask = two_four_mask(conv).reshape(6, -1, 4)
    assert (mask.sum(-1) == 2).all()


def test_fixed_point_codes_sit_on_the_trained_binary_point():
    quant = FakeQuant(6, fixed_point=True)
    quant.init_from(torch.tensor([-1.5, 0.3, 1.9]))
    fraction = int(quant.frac.item())
    assert 2 ** (5 - fraction) >= 1.9 > 2 ** (4 - fraction)  # the finest point covering the range
    codes = quant(torch.linspace(-2, 2, 101)) * 2**fraction
    assert torch.allclose(codes, codes.round()) and codes.min() >= -32 and codes.max() <= 31


def test_gpusq_vit_prunes_two_of_four_and_quantizes(vit):
    runner = apply(vit, "sparse.gpusq_vit", steps=2, batch=8)
    layers = [m for m in runner.model.modules() if isinstance(m, QuantLayer)]
    assert layers and runner.stats["sparse_kernels"] is False and runner.stats["sparsity"] > 0.4
    masked = next(m for m in layers if m.mask is not None)
    assert (masked.effective_weight().reshape(len(masked.effective_weight()), -1, 4) != 0).sum(-1).max() <= 2


def test_qfx_records_bit_operations_and_keeps_accuracy(vit):
    runner = apply(vit, "quant.qfx", steps=4, batch=8, weight_bits=8, activation_bits=8)
    assert runner.stats["bops_ratio"] == 16.0  # fp32 × fp32 against 8 × 8 bit multiplies
    assert runner.stats["macs_per_image"] > 0 and runner.stats["fixed_point_layers"] > 0
    base = accuracy(default_runner(vit, vit.model), vit, WHOLE)["top1"]
    assert accuracy(runner, vit, WHOLE)["top1"] > base - 0.1


def test_q_hyvit_finds_the_hybrid_s_bridge_blocks_and_quantizes_every_layer(vit):
    mobilevit = ImageClassifier(
        build_net(
            "mobilevit",
            {
                "image_size": 64,
                "num_labels": 6,
                "hidden_sizes": [16, 24, 32],
                "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
                "num_attention_heads": 2,
            },
        )
    )
    bridges = [is_bridge(unit) for unit in units(mobilevit)]
    assert sum(bridges) == 3 and not bridges[0] and not bridges[1], "the three MobileViT blocks, not the MV2 stages"
    assert not any(is_bridge(unit) for unit in units(vit.model)), "a plain ViT has no conv/attention bridge"
    runner = apply(vit, "quant.q_hyvit", iterations=4, calibration_images=16, batch=8)
    convs_and_linears = [m for m in runner.model.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    assert all(isinstance(parent, QuantLayer) for parent in _parents(runner.model, convs_and_linears))
    base = accuracy(default_runner(vit, vit.model), vit, WHOLE)["top1"]
    assert accuracy(runner, vit, WHOLE)["top1"] > base - 0.1


def _parents(model, layers):
    wanted = {id(layer) for layer in layers}
    return [parent for parent in model.modules() for child in parent.children() if id(child) in wanted]


def test_gbnn_exits_early_only_when_confident(vit):
    eager = apply(vit, "head.gbnn", threshold=0.0, steps=30, pool_images=256)
    logits(eager, vit)
    assert eager.model.last_mean_exit == eager.stats["exits"][0]
    patient = apply(vit, "head.gbnn", threshold=1.0, steps=30, pool_images=256)
    logits(patient, vit)
    assert patient.model.last_mean_exit == patient.stats["exits"][-1]
    assert accuracy(patient, vit, WHOLE)["top1"] > 0.3, "the boosted stages learn the task (chance: 0.1)"


def test_diswot_scores_the_teacher_best_and_keeps_its_student_in_budget(vit):
    pixels, labels = vit.data.training_batch(16, 16, torch.Generator().manual_seed(0))
    maps, features = class_maps(vit.model, pixels, labels, 8)
    assert diswot_score(vit.model, maps, features, pixels, labels) == pytest.approx(0.0, abs=1e-5)
    torch.manual_seed(3)
    random_init = ImageClassifier(type(vit.model.net)(vit.model.net.config).eval())
    assert diswot_score(random_init, maps, features, pixels, labels) < -1e-3
    assert torch.allclose(gram(features).norm(dim=1), torch.ones(16))
    runner = apply(vit, "distill.diswot", population=3, generations=1, steps=4, batch=8, proxy_images=8)
    assert runner.stats["param_ratio"] <= 0.5 and runner.stats["student_params"] < vit.spec.params


@pytest.mark.slow
@pytest.mark.parametrize("method_id", ["deploy.onnxruntime", "deploy.openvino"])
def test_a_runtime_runs_the_exported_graph_with_the_model_s_outputs(vit, method_id):
    runner = apply(vit, method_id)
    reference = logits(default_runner(vit, vit.model), vit)
    assert torch.allclose(logits(runner, vit), reference, atol=1e-4)
    assert runner.model.graph.numel() > 0 and runner.model.export_seconds, "the graph ran, and its export was timed"


@pytest.mark.slow
def test_onnxruntime_int8_changes_outputs_but_keeps_predictions(vit):
    runner = apply(vit, "deploy.onnxruntime_int8", calibration_images=32)
    reference = logits(default_runner(vit, vit.model), vit)
    mine = logits(runner, vit)
    assert not torch.allclose(mine, reference, atol=1e-4) and runner.stats["int8"] == "static"
    assert (mine.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.75

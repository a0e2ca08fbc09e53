"""The vision family: deterministic image sets, the workload, the classifier wrapper and its
multi-view mode, the token engine's parity with transformers' ViT, checkpoint folders, and the
records the harness writes."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from executors.families import default_runner, get_family, measure
from executors.families.vision import hf_loader
from executors.families.vision.data import HELDOUT_IMAGES, SHAPE_CLASSES, ImageSet, _digits, render_shapes, to_pixels
from executors.families.vision.harness import accuracy, inputs
from executors.families.vision.models import ImageClassifier, build_net, multi_view, save_classifier
from executors.families.vision.workload import VisionWorkload, parse_grid
from executors.families.vision.zoo import load_local
from executors.methods.tokens.engine import TokenViT
from executors.protocol import prepare
from executors.registry import default_config

CPU = torch.device("cpu")
NODE = {"id": "test-node", "hardware_class": "test-cpu-1t", "device_kind": "cpu"}


@pytest.fixture(scope="module")
def vit(zoo_root):
    build = get_family("vision").fixture
    assert build is not None
    return build(zoo_root)


def test_shapes_render_the_same_scenes_at_every_resolution_and_seed():
    small, labels = render_shapes(12, 32, seed=5)
    again, labels_again = render_shapes(12, 32, seed=5)
    large, labels_large = render_shapes(12, 64, seed=5)
    assert small.dtype == torch.uint8 and small.shape == (12, 3, 32, 32) and large.shape == (12, 3, 64, 64)
    assert torch.equal(small, again) and torch.equal(labels, labels_again) and torch.equal(labels, labels_large)
    assert not torch.equal(small, render_shapes(12, 32, seed=6)[0])
    # the same scene: the large render, area-downsampled, is close to the small one
    shrunk = F.interpolate(large.float(), size=(32, 32), mode="area")
    assert (shrunk - small.float()).abs().mean() < 12


def test_held_out_splits_are_fixed_and_never_trained_on():
    shapes = ImageSet("shapes")
    images, labels = shapes.heldout(32)
    assert len(images) == len(labels) == HELDOUT_IMAGES
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))
    training, _ = shapes.training_batch(16, 32, torch.Generator().manual_seed(0))
    assert training.min() >= -1 and training.max() <= 1
    assert not any(torch.equal(to_pixels(images[i]), training[0]) for i in range(len(images)))
    _, _, order = _digits()
    heldout, train = set(order[:HELDOUT_IMAGES].tolist()), set(order[HELDOUT_IMAGES:].tolist())
    assert not heldout & train and len(heldout | train) == 1797
    digits, digit_labels = ImageSet("digits").heldout(16)
    assert digits.shape == (HELDOUT_IMAGES, 3, 16, 16) and len(set(digit_labels.tolist())) == 10
    with pytest.raises(ValueError, match="unknown image set"):
        ImageSet("cifar")


def test_workload_bounds_grid_and_fit(vit):
    with pytest.raises(ValueError, match="objective"):
        VisionWorkload(1, 32, "fastest")
    with pytest.raises(ValueError, match="crops"):
        VisionWorkload(1, 32, crops=2)
    with pytest.raises(ValueError, match="split evenly"):
        VisionWorkload(1, 30, crops=4)
    grid = parse_grid("batch=1,64 res=32,64 crops=1,4")
    assert len(grid) == 8 and VisionWorkload(64, 64, crops=4) in grid
    assert VisionWorkload(1, 32).id != VisionWorkload(1, 64).id != VisionWorkload(1, 64, crops=4).id
    assert VisionWorkload(1, 16).fits(vit) is None and VisionWorkload(1, 32, crops=4).fits(vit) is None
    assert "trained at 16 px" in VisionWorkload(1, 32).fits(vit)
    with pytest.raises(ValueError, match="unknown vision axis"):
        parse_grid("batch=1 tokens=64")


def test_multi_view_is_the_thumbnail_then_the_crops_row_by_row():
    pixels = torch.randn(2, 3, 8, 8)
    views = multi_view(pixels, 2)
    assert views.shape == (2, 5, 3, 4, 4)
    assert torch.allclose(views[:, 0], F.avg_pool2d(pixels, 2))
    assert torch.equal(views[:, 1], pixels[..., :4, :4]) and torch.equal(views[:, 2], pixels[..., :4, 4:])
    assert torch.equal(views[:, 4], pixels[..., 4:, 4:])


def test_the_token_engine_reproduces_transformers_vit_exactly(vit):
    """With no reducer the engine's blocks (its own attention over the ViT's weights) are the model."""
    engine = TokenViT(vit.model)
    whole = inputs(vit, VisionWorkload(4, 16), 4)
    views = inputs(vit, VisionWorkload(4, 32, crops=4), 4)
    with torch.inference_mode():
        assert torch.allclose(engine(whole), vit.model(whole), atol=1e-5)
        assert torch.allclose(engine(views), vit.model(views), atol=1e-5)
        assert engine.last_tokens == 1 + 5 * 16  # the thumbnail's class token and every view's 16 patches


def test_the_fixture_classifies_held_out_digits(vit):
    runner = default_runner(vit, vit.model)
    figures = accuracy(runner, vit, VisionWorkload(1, 16))
    assert figures["images"] == HELDOUT_IMAGES and figures["top1"] > 0.4  # chance is 0.1


def test_a_checkpoint_folder_round_trips_and_needs_its_image_set(vit, tmp_path):
    save_classifier(vit.model, tmp_path / "mine", {"dataset": "digits", "resolutions": [16]})
    bundle = load_local(tmp_path / "mine", f"local:{tmp_path / 'mine'}")
    assert bundle is not None and bundle.spec.architecture == "vit" and bundle.spec.params == vit.spec.params
    pixels = inputs(vit, VisionWorkload(2, 16), 2)
    with torch.inference_mode():
        assert torch.equal(bundle.model(pixels), vit.model(pixels))
    (tmp_path / "mine" / "vision.json").unlink()
    with pytest.raises(ValueError, match="vision.json"):
        load_local(tmp_path / "mine", "local:mine")
    assert load_local(tmp_path, "local:empty") is None  # not a vision folder: another family's turn


def test_config_json_is_described_without_loading_weights():
    config = json.loads(
        build_net(
            "vit",
            {
                "image_size": 32,
                "patch_size": 4,
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            },
        ).config.to_json_string()
    )
    described = hf_loader.describe(config)
    assert described["family"] == "vit" and described["context"] == 65 and described["layers"] == 2
    assert described["descriptors"]["tokens"] == 64 and described["params"] > 0
    resnet = build_net("resnet", {"hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8})
    assert hf_loader.describe(json.loads(resnet.config.to_json_string()))["family"] == "cnn"
    with pytest.raises(ValueError, match="remote code"):
        hf_loader.describe({**config, "auto_map": {"AutoModel": "evil.Model"}})
    with pytest.raises(ValueError, match="not a vision classifier"):
        hf_loader.describe({"model_type": "swin"})


def test_hybrid_and_cnn_classifiers_expose_their_stages():
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
    pixels = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        staged = mobilevit.head(mobilevit.read_out(mobilevit.run_blocks(mobilevit.embed(pixels))))
        assert torch.allclose(staged, mobilevit(pixels), atol=1e-5)
        hidden, widths = mobilevit.embed(pixels), []
        for depth, block in enumerate(mobilevit.blocks(), start=1):
            hidden = block(hidden)
            widths.append(mobilevit.read_out(hidden, depth).shape[-1])
    assert mobilevit.depth_widths() == widths  # what a head at each depth reads (the last: the 1×1 expansion)
    with pytest.raises(ValueError, match="ViT"):
        mobilevit(multi_view(pixels))


def test_the_harness_records_accuracy_flops_and_tokens(vit):
    methods = [prepare(vit, [default_config(m)], CPU) for m in ("tok.tome", "quant.int8_dynamic")]
    records = {r["method_id"]: r for r in measure(vit, VisionWorkload(4, 16), methods, NODE, device=CPU)}
    base, tome, int8 = records["baseline"], records["tok.tome"], records["quant.int8_dynamic"]
    assert all(r["status"] == "ok" for r in records.values())
    assert base["quality_metric"] == "heldout_top1" and base["quality_value"] > 0.4
    assert tome["metrics"]["heldout_images"] == HELDOUT_IMAGES and tome["quality_value"] is not None
    assert tome["metrics"]["flops_ratio"] > 1.0, "merging tokens cuts the counted FLOPs"
    assert tome["metrics"]["tokens_per_image"] == 17 and int8["metrics"]["baseline_flops_per_image"] > 0
    assert tome["workload"]["kind"] == "vision-classify" and tome["model"]["family"] == "vit"


def test_a_reference_at_chance_marks_its_accuracy_deltas_uninformative(vit):
    """A classifier that always answers class 0 has no accuracy left to lose: its records say so."""
    guessing = copy.deepcopy(vit.model)
    with torch.no_grad():
        guessing.net.classifier.weight.zero_()
        guessing.net.classifier.bias.zero_()
    blind = dataclasses.replace(vit, model=guessing)
    workload = VisionWorkload(4, 16)
    for bundle, informative in ((vit, True), (blind, False)):
        int8 = prepare(bundle, [default_config("quant.int8_dynamic")], CPU)
        records = {r["method_id"]: r for r in measure(bundle, workload, [int8], NODE, device=CPU)}
        assert records["quant.int8_dynamic"]["metrics"]["quality_informative"] is informative
    assert records["baseline"]["quality_value"] < 1 / blind.spec.extra["num_labels"] + 0.1

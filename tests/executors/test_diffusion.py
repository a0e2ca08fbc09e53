"""The diffusion family: its denoisers against diffusers' own forwards, the sampler's counting,
the workload's limits, the protocol's records and the local loader.

The fixture is the family's tiny DiT (64 tokens on 16×16 digits, trained in seconds); the UNet
checks use an untrained diffusers UNet2DModel, since they compare two forwards of the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

import pytest
import torch
from conformance import Case, apply_case, claim_failures

from executors.families import default_runner, get_family, measure, prepare_reference, workload_from_json
from executors.families.diffusion import fixture as tiny_fixture
from executors.families.diffusion.data import image_set
from executors.families.diffusion.networks import Control, Denoiser, FeatureCache, UNetDenoiser
from executors.families.diffusion.quality import image_quality, to_uint8
from executors.families.diffusion.sampler import (
    DiffusionModel,
    ModelInfo,
    Sampler,
    Settings,
    diffusion_model,
    make_scheduler,
    sample,
)
from executors.families.diffusion.workload import SampleWorkload, parse_grid
from executors.families.diffusion.zoo import RECIPES, _unet, build_net, load_local
from executors.hardware import fingerprint, node_row
from executors.protocol import prepare
from executors.registry import Method, MethodConfig, default_config, get_method, register_method, unregister_method

CPU = torch.device("cpu")
GUIDED = Settings(steps=10, guidance_scale=3.0)


@pytest.fixture(scope="module")
def dit(zoo_root):
    return tiny_fixture(zoo_root)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNetDenoiser(build_net("unet", _unet((4, 8, 16), 2, 10, 16))).eval()


def plain(bundle) -> Sampler:
    return cast(Sampler, default_runner(bundle, bundle.model))


def _inputs(batch: int, resolution: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 1, resolution, resolution), generator=generator)
    return x, torch.tensor([10, 500, 999, 3][:batch]), torch.tensor([0, 3, 10, 7][:batch])  # 10: the null class


@torch.no_grad()
def test_the_dit_denoiser_is_diffusers_own_forward(dit):
    net = diffusion_model(dit.model).net
    x, t, labels = _inputs(3, 16)
    mine = net(x, t, labels)
    theirs = net.net(x, timestep=t, class_labels=labels).sample
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_the_unet_denoiser_is_diffusers_own_forward(unet):
    x, t, labels = _inputs(3, 16)
    torch.testing.assert_close(unet(x, t, labels), unet.net(x, t, class_labels=labels).sample, rtol=1e-4, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("which", ["dit", "unet"])
def test_reusing_features_cached_at_the_same_input_changes_nothing(which, dit, unet):
    """A cache filled by a full forward, then reused at the same (x, t): DeepCache's shallow path and
    the DiT's cached residuals must give the full forward's output; at another t they must not."""
    net = diffusion_model(dit.model).net if which == "dit" else unet
    x, t, labels = _inputs(2, 16)
    rows = torch.arange(2)
    units = frozenset(range(1, net.units - 1)) if which == "dit" else frozenset({1})
    cache = FeatureCache()
    full = net(x, t, labels, Control(rows, 2, cache, store=units))
    assert all(cache.has(u) for u in units)
    reused = net(x, t, labels, Control(rows, 2, cache, reuse=units, store=frozenset()))
    torch.testing.assert_close(reused, full, rtol=1e-4, atol=1e-5)
    elsewhere = net(x, t + 300, labels, Control(rows, 2, cache, reuse=units, store=frozenset()))
    assert not torch.allclose(elsewhere, net(x, t + 300, labels), atol=1e-4)


def test_the_plain_sampler_is_seeded_and_counts_its_evaluations(dit):
    runner = plain(dit)
    labels = torch.tensor([0, 1, 2])
    first, again = runner.sample(labels, GUIDED, seed=3), runner.sample(labels, GUIDED, seed=3)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, runner.sample(labels, GUIDED, seed=4).images)
    assert first.nfe == first.effective_nfe == 20  # guided: cond + uncond per step
    unguided = runner.sample(labels, Settings(10, 1.0), seed=3)
    assert unguided.nfe == 10 and not torch.equal(unguided.images, first.images)
    assert first.images.shape == (3, 1, 16, 16) and first.images.abs().max() <= 1


def test_workload_limits_and_grids(dit):
    with pytest.raises(ValueError, match="scheduler"):
        SampleWorkload(scheduler="euler")
    with pytest.raises(ValueError):
        workload_from_json({"kind": "diffusion-sample", "steps": 0})
    assert SampleWorkload(resolution=32).fits(dit) and SampleWorkload(resolution=16).fits(dit) is None
    grid = parse_grid("batch=1,8 steps=20,50 guidance=1,3 res=16")
    assert len(grid) == 8 and len({w.id for w in grid}) == 8
    with pytest.raises(ValueError, match="unknown sample axis"):
        parse_grid("frames=4")
    again = workload_from_json(grid[3].shape())
    assert again == grid[3] and again.id == grid[3].id


@pytest.mark.slow
def test_records_carry_the_fid_proxy_class_accuracy_and_same_seed_psnr(dit):
    """The reference and adaptive guidance measured by the protocol on one small workload."""
    workload = SampleWorkload(batch_size=1, resolution=16, steps=4, guidance_scale=3.0)
    node = node_row(fingerprint("cpu"))
    ag = prepare(dit, [default_config("diff.guidance.adaptive")], CPU)
    baseline = prepare_reference(dit, workload, CPU)
    records = measure(dit, workload, [ag], node, device=CPU, reps=5, baseline=baseline)
    by_method = {r["method_id"]: r for r in records}
    assert set(by_method) == {"baseline", "diff.guidance.adaptive"}
    for record in records:
        assert record["status"] == "ok", record.get("reason")
        metrics = record["metrics"]
        assert record["quality_metric"] == "fid_proxy" and record["quality_value"] > 0
        for key in ("fid_proxy_stderr", "class_accuracy", "psnr_to_reference", "mse_to_reference", "nfe_per_image"):
            assert key in metrics, (record["method_id"], key)
    mine = by_method["diff.guidance.adaptive"]["metrics"]
    base = by_method["baseline"]["metrics"]
    assert base["mse_to_reference"] == 0 and base["psnr_to_reference"] == 100
    assert mine["nfe_per_image"] <= base["nfe_per_image"] == 8
    assert mine["quality_basis"].startswith("250 images")


class ExactDenoiser(Denoiser):
    """The optimal ε-predictor of a finite image set: under the forward process the posterior over
    x0 is a softmax over the training images (restricted to the class asked for; every image for
    the null class), and ε̂ = (x_t − √ᾱ·E[x0 | x_t]) / √(1 − ᾱ). No training is involved, so what
    its samples score measures the sampler and the quality pipeline alone."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, null_class: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the sampler reads the device from a parameter
        self.images, self.labels, self.null_class = images.flatten(1).double(), labels, null_class
        self.alphas = make_scheduler("ddpm").alphas_cumprod.double()

    def forward(self, x, t, labels, control=None):
        alpha, flat = self.alphas[int(t)], x.flatten(1).double()
        logits = -(torch.cdist(flat, alpha.sqrt() * self.images) ** 2) / (2 * (1 - alpha))
        allowed = (self.labels[None, :] == labels[:, None]) | (labels == self.null_class)[:, None]
        x0 = logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ self.images
        return ((flat - alpha.sqrt() * x0) / (1 - alpha).sqrt()).float().view_as(x)


@pytest.mark.slow
def test_the_sampler_with_the_exact_denoiser_regenerates_digits_and_the_fid_proxy_ranks_a_damaged_one_worse():
    data = image_set("digits", 16)
    model = DiffusionModel(ExactDenoiser(data.train_images, data.train_labels, data.classes),
                           ModelInfo(data.classes, 16, 1, "digits"))  # fmt: skip
    labels = torch.arange(250) % data.classes

    def quality(steps: int) -> dict:
        return image_quality(to_uint8(sample(model, labels, Settings(steps, 1.0), seed=0).images), labels, "digits", 16)

    reference, one_step = quality(50), quality(1)
    assert reference["class_accuracy"] >= 0.8  # 0.92 here (the classifier: 0.95); a wrong label path scores 0.004
    assert reference["fid_proxy"] <= 3 * reference["fid_proxy_floor"]
    # One DDIM step returns each class's posterior mean: recognisable (class accuracy stays high),
    # but blurred and without diversity, which the FID proxy sees and class accuracy does not.
    assert one_step["fid_proxy"] - reference["fid_proxy"] > 3 * (
        one_step["fid_proxy_stderr"] + reference["fid_proxy_stderr"]
    )


@dataclass(frozen=True)
class NoopConfig(MethodConfig):
    version: int = 1


@pytest.fixture
def noop():
    """A canary: it claims to change the samples and the evaluations but returns the plain sampler."""

    @register_method("test.diffusion_noop", NoopConfig, category="test", families=("diffusion",),
                     changes=("outputs", "forward_passes"), paper="does nothing")  # fmt: skip
    class Noop(Method):
        def apply(self, bundle, config):
            return default_runner(bundle, diffusion_model(bundle.model).with_plan())

    yield get_method("test.diffusion_noop")
    unregister_method("test.diffusion_noop")


def test_the_registry_suite_rejects_a_diffusion_method_that_changes_nothing(noop, dit):
    reference = apply_case(Case("baseline", "diffusion"), dit)[0]
    failures = claim_failures(noop, "diffusion", noop.apply(dit, NoopConfig()), reference, dit)
    assert {f.split(":")[0] for f in failures} == {"outputs", "forward_passes"}, failures


def test_a_diffusers_folder_loads_as_local_and_samples_like_the_zoo_model(dit, tmp_path):
    model = diffusion_model(dit.model)
    model.net.net.save_pretrained(tmp_path, safe_serialization=True)
    assert load_local(tmp_path, "local:x") is None  # no diffusion.json: not claimed by this family
    (tmp_path / "diffusion.json").write_text(json.dumps({"dataset": "digits", "classes": 10}))
    bundle = load_local(tmp_path, f"local:{tmp_path}")
    assert bundle is not None and bundle.family == "diffusion" and bundle.spec.extra["tokens"] == 64
    labels = torch.tensor([4, 5])
    mine = plain(bundle).sample(labels, GUIDED, seed=0).images
    torch.testing.assert_close(mine, plain(dit).sample(labels, GUIDED, seed=0).images)
    (tmp_path / "diffusion.json").write_text(json.dumps({"dataset": "faces", "classes": 10}))
    with pytest.raises(ValueError, match="unknown image set"):
        load_local(tmp_path, "local:y")


def test_the_zoo_lists_every_recipe_with_its_architecture():
    family = get_family("diffusion")
    assert {e.name for e in family.zoo} == set(RECIPES)
    long = RECIPES["diff-dit-shapes-long"]
    assert (long.resolution // long.config["patch_size"]) ** 2 >= 1024  # the sparse-attention model
    assert {r.architecture for r in RECIPES.values()} == {"unet", "dit"}

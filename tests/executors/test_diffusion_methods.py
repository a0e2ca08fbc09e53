"""The diffusion methods' own mechanisms, each with a check a broken or no-op version fails.

The registry suite (test_registry_methods.py) already shows every method changes its samples and
evaluations against the plain sampler; these tests check *how*: the knob that turns a method into
the reference gives the reference's samples, the knob that turns it up changes what the paper says
it changes. Configs are small so that the learned or searched parts train in seconds.
"""

from __future__ import annotations

from typing import cast

import pytest
import torch

from executors.families.diffusion import fixture as tiny_fixture
from executors.families.diffusion.networks import Control
from executors.families.diffusion.quality import pixel_distance, to_uint8
from executors.families.diffusion.sampler import Sampler, Settings, diffusion_model, uniform_timesteps
from executors.methods.diffusion import adaspa, autodiffusion, harmonica, linear_ag, ptq4dm, speedupnet
from executors.methods.diffusion.engine import reference_trajectory
from executors.protocol import model_bytes
from executors.registry import config_from_json, get_method

GUIDED = Settings(steps=10, guidance_scale=3.0)
LABELS = torch.tensor([0, 1, 2, 3])


@pytest.fixture(scope="module")
def dit(zoo_root):
    return tiny_fixture(zoo_root)


@pytest.fixture(scope="module")
def reference(dit):
    return applied(dit, "baseline").sample(LABELS, GUIDED, 5)


def applied(bundle, method_id: str, **knobs) -> Sampler:
    return cast(Sampler, get_method(method_id).apply(bundle, config_from_json({"method": method_id, "params": knobs})))


def run(bundle, method_id: str, settings: Settings = GUIDED, **knobs):
    return applied(bundle, method_id, **knobs).sample(LABELS, settings, 5)


def psnr(a, b) -> float:
    return pixel_distance(to_uint8(a.images), to_uint8(b.images))["psnr_to_reference"]


@pytest.mark.slow
def test_adaptive_guidance_truncates_per_sample_only_once_the_branches_agree(dit, reference):
    never = run(dit, "diff.guidance.adaptive", threshold=1.0)  # cos ≤ 1: guidance never stops
    assert torch.equal(never.images, reference.images) and never.nfe == reference.nfe == 20
    at_once = run(dit, "diff.guidance.adaptive", threshold=0.0)  # stops after the first guided step
    assert at_once.nfe == 11 and at_once.stats["guided_steps_mean"] == 1
    middle = run(dit, "diff.guidance.adaptive", threshold=0.9)
    assert 11 <= middle.nfe <= 20
    assert psnr(middle, reference) >= psnr(at_once, reference)  # later truncation strays less
    with pytest.raises(ValueError, match="without it"):
        run(dit, "diff.guidance.adaptive", Settings(10, 1.0))  # nothing to truncate without guidance


@pytest.mark.slow
def test_linear_ag_fits_the_unconditional_branch_from_past_estimates(dit, reference):
    config = linear_ag.LinearAGConfig(fit_samples=8, threshold=1.0)
    path = reference_trajectory(diffusion_model(dit.model), LABELS, GUIDED, seed=9)  # not the fit's seed
    coef = linear_ag.fit_coefficients(diffusion_model(dit.model), GUIDED, path.timesteps, config)[0]["coef"]
    errors, naive = [], []
    for k in range(1, len(path.timesteps)):
        a, b, c, d = coef[k].tolist()
        estimate = a * path.cond[k] + b * path.cond[k - 1] + c * path.uncond[k - 1] + d
        errors.append((estimate - path.uncond[k]).pow(2).mean())
        naive.append((path.uncond[k - 1] - path.uncond[k]).pow(2).mean())  # reusing the last one
    assert sum(errors) < sum(naive)
    out = run(dit, "diff.guidance.linear_ag", fit_samples=8, threshold=1.0)
    assert out.stats["uncond_estimated"] == 5 * 4  # steps 1, 3, 5, 7, 9 of 10 (every=2), for 4 samples
    assert out.nfe == reference.nfe - 5 and not torch.equal(out.images, reference.images)
    assert psnr(out, reference) > 20


def test_the_static_cache_computes_less_between_full_steps(dit, reference):
    out = run(dit, "diff.cache.static", interval=3, branch=1)
    assert out.nfe == reference.nfe  # every step still evaluates the network…
    assert out.effective_nfe < reference.nfe  # …but 6 of 10 evaluations skip the middle block
    middle = diffusion_model(dit.model).net.units - 2
    assert out.stats["cache_bytes"] > 0 and middle == 1
    with pytest.raises(ValueError, match="nothing is left to cache"):
        run(dit, "diff.cache.static", branch=2)


@pytest.mark.slow
def test_harmonica_router_reuses_more_when_computing_costs_more(dit):
    """β (usage_weight) prices each computed block against the image-error-weighted ε error."""
    small: dict = {"iterations": 3, "batch": 2, "refresh": 2, "proxy_batch": 1, "lr": 1.0}
    cheap, costly = (run(dit, "diff.cache.harmonica_router", usage_weight=w, **small) for w in (0.0, 5.0))
    assert costly.stats["router_reuse_share"] > cheap.stats["router_reuse_share"]
    assert costly.effective_nfe < costly.nfe == cheap.nfe
    config = harmonica.HarmoniCaConfig(**small)
    schedule = uniform_timesteps(GUIDED.scheduler, GUIDED.steps)
    model = diffusion_model(dit.model)
    reuse_all = torch.full((10, model.net.units), -5.0)  # every block below the gate threshold
    weights = harmonica.image_error_proxy(model.net, GUIDED, schedule, None, reuse_all, config, model.info)
    assert weights.mean().item() == pytest.approx(1) and weights.std() > 0  # steps differ in image error


@pytest.mark.slow
def test_autodiffusion_keeps_the_budget_and_never_scores_worse_than_uniform_steps(dit):
    knobs = {"steps": 4, "population": 3, "generations": 1, "eval_images": 16}
    runner = applied(dit, "diff.steps.evo_search", **knobs)
    out = runner.sample(LABELS, GUIDED, 5)
    schedule = diffusion_model(runner.model).plan.schedule
    searched = schedule.last.tensors
    timesteps = searched["timesteps"].tolist()
    assert len(timesteps) == 4 == len(set(timesteps)) and timesteps == sorted(timesteps, reverse=True)
    assert out.nfe == 8 and out.stats["steps"] == 4  # the budget: 4 guided steps of the workload's 10
    assert out.stats["search_fid_proxy"] <= out.stats["search_fid_proxy_uniform"]  # uniform is in the first population
    allowed = int(
        (1 - autodiffusion.EvoSearchConfig().block_budget) * 4 * len(diffusion_model(dit.model).net.droppable)
    )
    assert int(searched["dropped"].sum()) <= allowed


@pytest.mark.slow
def test_ptq4dm_calibrates_on_ndtc_time_steps_and_runs_int8_modules(dit, reference):
    config = ptq4dm.PTQ4DMConfig(samples=8, trajectory_steps=6, candidates=4)
    x, t, labels = ptq4dm.ndtc_inputs(diffusion_model(dit.model), config)[0]
    assert x.shape[0] == 8 and len(set(t.tolist())) > 1  # several noise levels, from the trajectories
    runner = cast(Sampler, get_method("quant.ptq.diffusion_timestep_calib").apply(dit, config))
    net = diffusion_model(runner.model).net
    quantized = [m for m in net.modules() if isinstance(m, ptq4dm.StaticInt8)]
    assert quantized and model_bytes(runner.model) < model_bytes(dit.model)
    out = runner.sample(LABELS, GUIDED, 5)
    assert not torch.equal(out.images, reference.images) and psnr(out, reference) > 15


@pytest.mark.slow
def test_adaspa_at_full_coverage_is_dense_attention_and_below_it_is_sparse(dit, reference):
    full = run(dit, "attn.adaspa_block_sparse", coverage=1.0, block_size=16)
    torch.testing.assert_close(full.images, reference.images, atol=1e-4, rtol=1e-4)
    assert full.stats["kernel_backend"] == "torch-reference" and full.stats["block_density_mean"] == 1.0
    sparse = run(dit, "attn.adaspa_block_sparse", coverage=0.3, block_size=16, dense_fraction=0.0)
    assert sparse.stats["block_density_mean"] < 1.0 and not torch.allclose(sparse.images, reference.images)
    assert adaspa.block_for(1024, 0) == 64 and adaspa.block_for(64, 0) == 16


@pytest.mark.slow
def test_speedupnet_adapter_moves_one_evaluation_towards_the_guided_prediction(dit, reference):
    config = speedupnet.SpeedUpNetConfig(trajectories=8, trajectory_steps=6, iterations=40, batch=16)
    model = diffusion_model(dit.model)
    runner = cast(Sampler, get_method("diff.distill.speedupnet_adapter").apply(dit, config))
    (adapter,) = runner.extra_modules
    path = reference_trajectory(model, LABELS, Settings(6, 3.0), seed=21)
    before = after = 0.0
    with torch.no_grad():
        for k, t in enumerate(path.timesteps):
            times = torch.full((4,), t)
            guided = path.uncond[k] + 3.0 * (path.cond[k] - path.uncond[k])
            offset = adapter(LABELS, 3.0, times)
            one = model.net(path.inputs[k], times, LABELS, Control(torch.arange(4), 4, emb_offset=offset))
            before += (path.cond[k] - guided).pow(2).mean().item()
            after += (one - guided).pow(2).mean().item()
    assert after < before
    out = runner.sample(LABELS, GUIDED, 5)
    assert out.nfe == 10  # one evaluation per step with guidance asked for


def test_dpm_solver_runs_diffusers_multistep_solver_at_its_step_cap(dit, reference):
    out = run(dit, "diff.steps.dpm_solver", steps=5)
    assert out.stats["solver"] == "dpm-solver++" and out.stats["steps"] == 5 and out.nfe == 10
    short = run(dit, "diff.steps.dpm_solver", Settings(3, 3.0), steps=5)
    assert short.stats["steps"] == 3  # never more steps than the workload asks

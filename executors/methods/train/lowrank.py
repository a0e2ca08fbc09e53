"""Low-rank gradient projection with Adam statistics in the projected space: the mechanism GaLore
(Zhao et al., ICML 2024, arXiv 2403.03507) introduced and Fira (Chen et al., arXiv 2410.01623)
extends; `train.memory.galore` and `train.memory.fira` are its two settings.

For every matrix of the transformer blocks' linear layers (m × n), every `update_gap` steps the
projector is refreshed from the gradient's SVD: the top `rank` left singular vectors when m ≤ n
(the projected gradient is rank × n), else the right ones (m × rank). Adam's two moments live in
the projected space, so their bytes fall by about min(m, n) / rank; the projector itself is
kept (and counted). The step is P · Adam(Pᵀ G) scaled by `scale`.

Fira adds back what the projection drops, G − P Pᵀ G, scaled per column (or row, along the
projected side) by ‖Adam(R)‖ / ‖R‖ — the factor the adaptive optimiser applied to the projected
gradient, which the paper finds tracks the factor a full-rank Adam would apply — and a
norm-growth limiter that caps the growth of that residual's norm at γ = 1.01 per step, against
the loss spikes of sudden gradient growth. Everything else (embeddings, norms, biases, heads)
is plain AdamW. Weight decay is decoupled, as in the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from executors.registry import transformer_blocks

GROWTH_LIMIT = 1.01  # Fira's γ


def projected_groups(model: nn.Module, rank: int, update_gap: int, scale: float, residual: bool) -> list[dict]:
    """The model's parameters in two groups: the block matrices wider than `rank` (projected), the rest."""
    chosen = {
        id(m.weight): m.weight
        for block in transformer_blocks(model)
        for m in block.modules()
        if isinstance(m, nn.Linear) and min(m.weight.shape) > rank
    }
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    low = {"params": list(chosen.values()), "rank": rank, "update_gap": update_gap, "scale": scale}
    return [{**low, "residual": residual}, {"params": rest}]


class LowRankAdam(torch.optim.AdamW):
    """AdamW whose groups with a `rank` keep their moments in a low-rank projection of the gradient."""

    def __init__(self, groups: list, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        every = self.param_groups
        self.param_groups = [g for g in every if "rank" not in g]
        try:
            if self.param_groups:
                super().step()
        finally:
            self.param_groups = every
        for group in (g for g in every if "rank" in g):
            for p in group["params"]:
                if p.grad is not None:
                    self._step_projected(p, group)
        return None

    def _step_projected(self, p: torch.Tensor, group: dict) -> None:
        state, grad = self.state[p], p.grad
        assert grad is not None
        beta1, beta2 = group["betas"]
        left = grad.shape[0] <= grad.shape[1]  # project the shorter side
        step = state.get("low_step", 0)
        if step % group["update_gap"] == 0:
            u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
            state["projection"] = (u[:, : group["rank"]] if left else vh[: group["rank"]].T).contiguous()
        projection = state["projection"]
        low = projection.T @ grad if left else grad @ projection
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(low), torch.zeros_like(low)
        step += 1
        state["low_step"] = step
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(low, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(low, low, value=1 - beta2)
        adapted = (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + group["eps"])
        update = projection @ adapted if left else adapted @ projection.T
        if group["residual"]:
            update = update + self._scaled_residual(state, grad, low, adapted, projection, left)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"] * group["scale"])

    @staticmethod
    def _scaled_residual(state, grad, low, adapted, projection, left: bool) -> torch.Tensor:
        """Fira: the gradient outside the projection, scaled per column (row) by the adaptive factor of
        the projected gradient, its norm kept from growing more than GROWTH_LIMIT per step."""
        dim = 0 if left else 1
        factor = adapted.norm(dim=dim) / (low.norm(dim=dim) + 1e-8)
        outside = grad - (projection @ low if left else low @ projection.T)
        residual = outside * (factor if left else factor.unsqueeze(1))
        norm = residual.norm()
        previous = state.get("residual_norm")
        if previous is not None and norm > GROWTH_LIMIT * previous:
            residual = residual * (GROWTH_LIMIT * previous / norm)
            norm = GROWTH_LIMIT * previous
        state["residual_norm"] = norm.detach()
        return residual

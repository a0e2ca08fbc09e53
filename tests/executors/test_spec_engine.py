"""The draft-then-verify engine: acceptance rules, tree masks and KV-cache rollback."""

from __future__ import annotations

import pytest
import torch

from executors.families.lm.model import DecoderLM, LMConfig
from executors.methods.spec.engine import (
    TokenTree,
    greedy_chain_accept,
    greedy_tree_accept,
    keep_cache_slots,
    point_mass,
    sampled_chain_accept,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a loaded machine two OpenMP
    threads can stall each other for tens of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_lm(seed: int = 0, vocab: int = 48, layers: int = 3) -> DecoderLM:
    torch.manual_seed(seed)
    config = LMConfig(vocab_size=vocab, dim=32, n_layers=layers, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128)
    return DecoderLM(config).eval()


def logits_preferring(tokens: list[list[int]], vocab: int = 10) -> torch.Tensor:
    """Logits whose argmax at [b, i] is tokens[b][i]."""
    out = torch.zeros(len(tokens), len(tokens[0]), vocab)
    for b, row in enumerate(tokens):
        for i, token in enumerate(row):
            out[b, i, token] = 5.0
    return out


def test_greedy_chain_accepts_the_matching_prefix_per_row():
    drafts = torch.tensor([[3, 4, 5], [3, 9, 5], [1, 4, 5]])
    logits = logits_preferring([[3, 4, 5, 6], [3, 4, 5, 6], [3, 4, 5, 6]])
    accepted, outputs = greedy_chain_accept(drafts, logits)
    assert accepted.tolist() == [3, 1, 0]
    assert outputs.tolist() == [[3, 4, 5, 6]] * 3  # the argmax: drafts where accepted, then the fix


def empirical(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).float() / len(tokens)


def test_speculative_sampling_reproduces_the_target_distribution():
    rows, vocab = 60000, 5
    generator = torch.Generator().manual_seed(0)
    target = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.05, 0.1, 0.3, 0.5], [0.2, 0.2, 0.2, 0.2, 0.2]]).expand(
        rows, -1, -1
    )
    draft_probs = torch.tensor([[0.1, 0.1, 0.2, 0.3, 0.3], [0.3, 0.3, 0.2, 0.1, 0.1]]).expand(rows, -1, -1)
    drafts = torch.multinomial(draft_probs.reshape(-1, vocab), 1, generator=generator).view(rows, 2)
    accepted, outputs = sampled_chain_accept(drafts, draft_probs, target, generator)
    assert (empirical(outputs[:, 0], vocab) - target[0, 0]).abs().sum() < 0.03
    second = outputs[accepted >= 1, 1]  # defined for rows that kept the first draft
    assert (empirical(second, vocab) - target[0, 1]).abs().sum() < 0.04
    # a draft distribution far from the target must be rejected often, not rubber-stamped
    assert 0.2 < (accepted >= 1).float().mean() < 0.8


def test_point_mass_proposals_stay_exact():
    """Jacobi's guessed tokens are chosen, not sampled; a one-hot q keeps sampling exact."""
    rows, vocab = 60000, 4
    generator = torch.Generator().manual_seed(1)
    target = torch.tensor([0.6, 0.25, 0.1, 0.05]).expand(rows, 2, -1)
    drafts = torch.randint(vocab, (rows, 1), generator=generator)
    _, outputs = sampled_chain_accept(drafts, point_mass(drafts, vocab), target, generator)
    assert (empirical(outputs[:, 0], vocab) - target[0, 0]).abs().sum() < 0.03


def test_equal_draft_and_target_distributions_accept_everything():
    probs = torch.softmax(torch.randn(64, 3, 7), dim=-1)
    generator = torch.Generator().manual_seed(2)
    drafts = torch.multinomial(probs[:, :2].reshape(-1, 7), 1, generator=generator).view(64, 2)
    accepted, _ = sampled_chain_accept(drafts, probs[:, :2], probs, generator)
    assert accepted.tolist() == [2] * 64


def test_tree_mask_lets_a_node_see_exactly_its_ancestors():
    tree = TokenTree((-1, 0, 0, 1, 1, 2, 3))
    mask = tree.attention_mask()
    assert tree.depths() == [0, 1, 1, 2, 2, 2, 3]
    assert mask[6].nonzero().flatten().tolist() == [0, 1, 3, 6]
    assert mask[5].nonzero().flatten().tolist() == [0, 2, 5]
    assert mask.sum().item() == 1 + 2 + 2 + 3 + 3 + 3 + 4
    assert TokenTree.chain(3).attention_mask().equal(torch.ones(4, 4, dtype=torch.bool).tril())
    with pytest.raises(ValueError):
        TokenTree((0, 0))
    with pytest.raises(ValueError):
        TokenTree((-1, 2, 0))


def root_paths(tree: TokenTree) -> list[list[int]]:
    paths = []
    for node in range(tree.size):
        path = [node]
        while tree.parents[path[0]] != -1:
            path.insert(0, tree.parents[path[0]])
        paths.append(path)
    return paths


def test_tree_forward_matches_a_sequential_forward_of_every_path():
    model = tiny_lm()
    tree = TokenTree((-1, 0, 0, 1, 1, 2, 3, 6))
    prefix = torch.randint(48, (2, 9))
    nodes = torch.randint(48, (2, tree.size))
    cache = model.new_cache(2, 64)
    model(prefix, cache)
    positions = cache.length + torch.tensor(tree.depths())
    tree_logits = model(nodes, cache, positions=positions, tree_mask=tree.attention_mask())
    for node, path in enumerate(root_paths(tree)):
        sequential = model(torch.cat((prefix, nodes[:, path]), dim=1))[:, -1]
        torch.testing.assert_close(tree_logits[:, node], sequential, atol=1e-4, rtol=1e-4)


def test_keeping_a_tree_path_leaves_the_cache_a_sequential_decode_would():
    model = tiny_lm(1)
    tree = TokenTree((-1, 0, 0, 1, 2, 4))
    prefix = torch.randint(48, (2, 7))
    nodes = torch.randint(48, (2, tree.size))
    cache = model.new_cache(2, 64)
    model(prefix, cache)
    start = cache.length
    model(nodes, cache, positions=start + torch.tensor(tree.depths()), tree_mask=tree.attention_mask())
    kept = torch.tensor([[0, 2, 4], [0, 1, 3]])  # a different path per row, same length
    keep_cache_slots(cache, start, kept)
    assert cache.length == start + 3
    follow = torch.randint(48, (2, 1))
    continued = model(follow, cache)[:, -1]
    for row in range(2):
        reference = torch.cat((prefix[row], nodes[row, kept[row]], follow[row]))[None]
        torch.testing.assert_close(continued[row], model(reference)[0, -1], atol=1e-4, rtol=1e-4)


def test_crop_rolls_back_rejected_drafts():
    model = tiny_lm(2)
    prompt, drafts = torch.randint(48, (1, 6)), torch.randint(48, (1, 4))
    cache = model.new_cache(1, 32)
    model(prompt, cache)
    model(drafts, cache)  # all four drafts written ...
    cache.crop(prompt.shape[1] + 1)  # ... only the first one kept
    follow = torch.randint(48, (1, 1))
    reference = model(torch.cat((prompt, drafts[:, :1], follow), dim=1))[:, -1]
    torch.testing.assert_close(model(follow, cache)[:, -1], reference, atol=1e-4, rtol=1e-4)


def test_greedy_tree_accept_follows_the_argmax_and_cuts_rows_to_the_shortest():
    tree = TokenTree((-1, 0, 0, 1, 2))
    #            node:  0  1  2  3  4
    tokens = torch.tensor([[7, 1, 2, 3, 4], [7, 1, 2, 3, 4]])
    # row 0: root → 2 (node 2) → 4 (node 4) → argmax 9; row 1: root → 1 (node 1) → argmax 8 (≠ 3)
    logits = logits_preferring([[2, 0, 4, 0, 9], [1, 8, 0, 0, 0]])
    path, emitted = greedy_tree_accept(tree, tokens, logits)
    assert path.tolist() == [[0, 2], [0, 1]]  # row 0 accepted two, row 1 one: both keep one
    assert emitted.tolist() == [[2, 4], [1, 8]]

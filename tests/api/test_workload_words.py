"""Workloads in words on the UI's pages come from each family's own wording (WorkloadKind.words)."""

from __future__ import annotations

from api.ui.words import workload_words


def test_each_family_words_its_rows_and_an_unknown_kind_gets_the_common_columns():
    stream = {"kind": "lm-stream", "batch_size": 4, "params": {"requests": 8, "load": 2, "shared": 0.5}}
    assert workload_words("lm-stream", stream) == "stream of 8 requests · load 2 · 50% share a prefix · batch ≤ 4"
    assert (
        workload_words("encoder-embed", {"batch_size": 2, "params": {"seq_len": 32}}) == "embed · batch 2 · 32 tokens"
    )
    longctx = {"prompt_len": 1024, "params": {"probes": 4}}
    assert workload_words("lm-longctx", longctx) == "long context · 1024 tokens · 4 passkey probes"
    generate = {"batch_size": 1, "prompt_len": 32, "gen_len": 8}
    assert workload_words("lm-generate", generate) == "batch 1 · 32-token prompt · 8 new tokens"
    assert workload_words("", generate) == workload_words("lm-generate", generate)  # no kind: the default one
    imported = {"batch_size": 64, "image_size": 32, "sampling": "ddim"}
    assert workload_words("no-such-kind", imported) == "batch 64 · 32 px images · ddim"

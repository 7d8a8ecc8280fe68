"""``lmforge ui``'s JSON API, in-process: the runs table and run pages read from real run folders,
names that leave the root refused, the key rules of the server, the playground through the serving
app, explanations, jobs started, refused and stopped, and the compare/tune views."""

import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_root import runs, tiny_job_yaml, ui_root  # noqa: E402,F401  (fixtures)

from conftest import sentiment_rows, write_jsonl  # noqa: E402
from lmforge.cli.main import main  # noqa: E402
from lmforge.errors import ConfigError  # noqa: E402
from lmforge.serving.keys import hash_key  # noqa: E402
from lmforge.ui.app import create_ui_app  # noqa: E402
from lmforge.ui.settings import UiSettings  # noqa: E402

KEY = "ui-key-0123456789"


def client(root: Path, **settings) -> TestClient:
    return TestClient(create_ui_app(UiSettings(runs=str(root), **settings)))


def wait_for(fetch, done, timeout: float = 120.0):
    deadline = time.time() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.time() < deadline, f"timed out; last: {value}"
        time.sleep(0.3)


def test_runs_and_run_pages_read_the_run_folders(ui_root):
    with client(ui_root) as c:
        listing = c.get("/api/runs").json()
        rows = {r["run"]: r for r in listing["runs"]}
        assert {"sentiment", "ner", "chat"} <= set(rows)
        assert rows["sentiment"]["task"] == "classification" and rows["sentiment"]["status"] == "done"
        assert "accuracy" in rows["sentiment"]["metrics"]
        page = c.get("/api/run", params={"name": "sentiment"}).json()
        assert page["record"]["task"] == "classification" and "task: classification" in page["config"]
        assert page["config_data"]["task"] == "classification"
        kinds = {r["kind"] for r in page["metrics"]}
        assert {"start", "train"} <= kinds
        validation = page["results"]["validation"]
        assert len(validation["confusion_matrix"]) == len(validation["labels"]) == 2
        assert page["predictions"] and all("text" in p and "gold" in p for p in page["predictions"])
        # mistakes (gold != label) come before correct rows
        wrong = [p["gold"] != p["label"] for p in page["predictions"]]
        assert wrong == sorted(wrong, reverse=True)
        assert page["report"] and "<html" in c.get("/api/report", params={"name": "sentiment"}).text.lower()
        ner = c.get("/api/run", params={"name": "ner"}).json()
        assert ner["row"]["task"] == "token_classification" and "tokens" in ner["predictions"][0]


@pytest.mark.parametrize("name", ["../", "..", "/etc", "sentiment/../../", "nope", "sentiment/model", "."])
def test_a_name_outside_the_root_or_not_a_run_is_404(ui_root, name):
    with client(ui_root) as c:
        r = c.get("/api/run", params={"name": name})
        assert r.status_code == 404, r.text
        assert r.json()["error"]["message"]


def test_compare_and_tune_folders_are_listed_and_read(ui_root):
    with client(ui_root) as c:
        studies = c.get("/api/runs").json()["studies"]
        tune = next(s for s in studies if s["kind"] == "tune")
        assert tune["trials"] == 2 and "best of 2 trial" in tune["best"]
        study = c.get("/api/study", params={"name": tune["name"], "kind": "tune"}).json()
        assert len(study["trials"]) == 2 and {"trial", "value", "state"} <= set(study["trials"][0])
        assert study["best"]["task"] == "classification" and study["report"]
        # its trials are ordinary runs, listed as such
        assert any(r["run"].startswith(tune["name"] + "/trials/") for r in c.get("/api/runs").json()["runs"])
        assert c.get("/api/study", params={"name": tune["name"], "kind": "compare"}).status_code == 404


def test_the_key_guards_the_api_and_the_playground_not_the_page(ui_root):
    with client(ui_root, api_key=KEY) as c:
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        for path in ("/api/runs", "/api/info", "/play/v1/models"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        page = c.get("/")
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_a_key_file_needs_the_ui_scope(ui_root, tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - {{id: dashboard, sha256: {hash_key(KEY)}, scopes: [ui], requests_per_minute: 2}}\n"
        f"  - {{id: app, sha256: {hash_key('app-key-0123456789')}, scopes: [infer, embed, admin]}}\n"
    )
    with client(ui_root, api_keys=str(keys)) as c:
        assert c.get("/").status_code == 200  # the page itself is open; it asks for the key
        assert c.get("/api/runs").status_code == 401
        denied = c.get("/api/runs", headers={"Authorization": "Bearer app-key-0123456789"})
        assert denied.status_code == 403 and "no 'ui' scope" in denied.json()["error"]["message"]
        ok = {"Authorization": f"Bearer {KEY}"}
        assert [c.get(path, headers=ok).status_code for path in ("/api/runs", "/api/jobs")] == [200, 200]
        limited = c.get("/api/info", headers=ok)  # 2 requests a minute
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    with pytest.raises(ConfigError, match="not both"):
        UiSettings(api_key=KEY, api_keys=str(keys)).check()
    UiSettings(host="0.0.0.0", api_keys=str(keys)).check()  # a key file guards an open bind too


def test_settings_refuse_an_open_network_bind_without_a_key(capsys):
    with pytest.raises(ConfigError, match="--api-key"):
        UiSettings(host="0.0.0.0").check()
    UiSettings(host="0.0.0.0", api_key=KEY).check()
    assert main(["ui", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ui: binding to 0.0.0.0") and "\n" not in err


def test_bad_bodies_are_4xx_naming_the_field(ui_root):
    with client(ui_root) as c:
        assert c.post("/api/jobs", content=b"name=x", headers={"content-type": "text/plain"}).status_code == 415
        r = c.post("/api/jobs", json={"name": "x", "config": None, "bogus": 1})
        assert r.status_code == 400 and "bogus" in r.json()["error"]["message"]
        r = c.post("/api/explain", json={"run": "sentiment", "text": "x", "method": "magic"})
        assert r.status_code == 400 and "method" in r.json()["error"]["message"]


def test_playground_serves_the_chosen_run_through_the_serving_app(ui_root):
    with client(ui_root) as c:
        r = c.post("/play/v1/classify", json={"input": "a fine film"})
        assert r.status_code == 503 and "choose a run" in r.json()["error"]["message"]
        assert c.post("/api/playground", json={"model": "../chat"}).status_code == 404
        c.post("/api/playground", json={"model": "sentiment"}).raise_for_status()
        status = wait_for(lambda: c.get("/api/playground").json(), lambda s: s["status"] != "loading")
        assert status == {
            "model": "sentiment",
            "status": "ok",
            "kind": "classification",
            "served_as": "play",
            "routes": ["/v1/classify"],
        }
        labels = set(c.get("/api/run", params={"name": "sentiment"}).json()["results"]["validation"]["labels"])
        out = c.post("/play/v1/classify", json={"input": ["a fine film", "a dull mess"], "top_k": 2}).json()
        assert [d["label"] in labels for d in out["data"]] == [True, True]
        assert abs(sum(x["score"] for x in out["data"][0]["top_k"]) - 1) < 1e-3
        # the serving app's own validation answers, unchanged
        r = c.post("/play/v1/classify", json={"input": []})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        assert c.post("/play/v1/ner", json={"input": "x"}).status_code == 400  # a classifier does not tag
        c.post("/api/playground", json={"model": "ner"}).raise_for_status()
        wait_for(lambda: c.get("/api/playground").json(), lambda s: s["status"] == "ok" and s["model"] == "ner")
        text = "Alice Smith flew to Paris"
        tagged = c.post("/play/v1/ner", json={"input": text}).json()["data"][0]["entities"]
        assert all(text[e["start"] : e["end"]] == e["text"] for e in tagged)


def test_explain_answers_token_attributions(ui_root):
    with client(ui_root) as c:
        r = c.post("/api/explain", json={"run": "sentiment", "text": "a gripping , beautifully acted film"})
        assert r.status_code == 200, r.text
        (one,) = r.json()["explanations"]
        assert [t["token"] for t in one["tokens"]][:2] == ["a", "gripping"]
        assert one["method"] == "integrated_gradients" and one["target"] == one["label"]
        assert c.post("/api/explain", json={"run": "sentiment", "text": "  "}).status_code == 400
        assert c.post("/api/explain", json={"run": "nope", "text": "x"}).status_code == 404


def test_jobs_are_checked_before_they_start(ui_root, tmp_path):
    with client(ui_root, configs=[str(tmp_path)]) as c:
        text = tiny_job_yaml(tmp_path)
        cases = [
            ({"name": "j1", "yaml": text, "overrides": ["train.bogus=1"]}, 400, "train.bogus"),
            ({"name": "j1", "yaml": "task: classification\nmodle: x\n"}, 400, "modle"),
            ({"name": "sentiment", "yaml": text}, 409, "exists"),
            ({"name": "../up", "yaml": text}, 400, "name"),
            ({"name": ".hidden", "yaml": text}, 400, "name"),
            ({"name": "j1", "config": "/etc/passwd"}, 400, "offered"),
            ({"name": "j1", "yaml": text, "overrides": ["output=/tmp/x"]}, 400, "output"),
            ({"name": "j1"}, 400, "either"),
        ]
        for body, status, words in cases:
            r = c.post("/api/jobs", json=body)
            assert r.status_code == status, (body, r.text)
            assert words in r.json()["error"]["message"], (body, r.text)
        assert not (ui_root / "j1").exists()


@pytest.mark.slow
def test_a_job_runs_to_the_end_and_another_stops_on_request(ui_root, tmp_path):
    with client(ui_root, max_jobs=1) as c:
        r = c.post("/api/jobs", json={"name": "ui-job", "yaml": tiny_job_yaml(tmp_path), "overrides": ["train.seed=3"]})
        assert r.status_code == 201, r.text
        job = r.json()
        busy = c.post("/api/jobs", json={"name": "ui-job-2", "yaml": tiny_job_yaml(tmp_path)})
        assert busy.status_code == 429
        done = wait_for(
            lambda: next(j for j in c.get("/api/jobs").json()["jobs"] if j["id"] == job["id"]),
            lambda j: j["status"] not in ("running", "stopping"),
        )
        assert done["status"] == "done", done["log"]
        assert done["progress"]["step"] == done["progress"]["total_steps"] > 0
        row = next(r for r in c.get("/api/runs").json()["runs"] if r["run"] == "ui-job")
        assert row["status"] == "done" and "accuracy" in row["metrics"]

        long = c.post("/api/jobs", json={"name": "ui-long", "yaml": tiny_job_yaml(tmp_path, epochs=500)}).json()
        wait_for(lambda: c.get("/api/jobs").json()["jobs"][0], lambda j: j["progress"]["step"] > 0)
        assert c.post(f"/api/jobs/{long['id']}/stop", json={}).json()["status"] in ("stopping", "stopped")
        stopped = wait_for(lambda: c.get("/api/jobs").json()["jobs"][0], lambda j: j["status"] != "stopping")
        assert stopped["status"] == "stopped" and stopped["returncode"] == 130
        assert any((ui_root / "ui-long" / "checkpoints").iterdir())  # resumable
        assert c.post("/api/jobs/nope/stop", json={}).status_code == 404


@pytest.mark.slow
def test_a_compare_folder_is_listed_with_its_recommendation(tmp_path):
    root = tmp_path / "runs"
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(16, 1))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"task: classification\ndata: {{train: {train}, validation: {dev}}}\noutput: {root}/cmp\n", encoding="utf-8"
    )
    assert main(["compare", str(config), "--models", "ngram", "--quiet"]) == 0
    with client(root) as c:
        listing = c.get("/api/runs").json()
        (study,) = listing["studies"]
        assert study["kind"] == "compare" and study["candidates"] == 1
        assert study["recommendation"]["best"] == "ngram" and "ngram" in study["recommendation"]["text"]
        page = c.get("/api/study", params={"name": study["name"], "kind": "compare"}).json()
        (row,) = page["compare"]["rows"]
        assert row["candidate"] == "ngram" and 0 <= row["quality"] <= 1
        # the candidate's own run folder is a run of the table too
        assert any(r["run"].startswith(study["name"] + "/runs/") for r in listing["runs"])

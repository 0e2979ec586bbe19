"""Hybrid serving: the real server answering known keys from a table that the real batch
predictions wrote, the model for the rest, stale and broken tables ignored; and the
analysis that decides whether a table pays."""

import csv
import json
import shutil

import numpy as np
import pytest

from serving import hybrid
from serving.batch_predict import predict_csv
from serving.request_log import RequestLog
from serving.server import LocalModelServer, ModelRepository
from serving.server_test import MODEL, in_process, post_json, push, wait_for

KEYS = [1000 + i for i in range(40)]  # the table holds the first 40 rows, keyed 1000..1039


def write_rows(path, rows, keys):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["trip_id", *rows[0]])
        writer.writeheader()
        writer.writerows({"trip_id": k, **r} for k, r in zip(keys, rows, strict=False))


def make_table(tmp_path, rows, model_dir, name="table.parquet"):
    source = tmp_path / "keyed.csv"
    write_rows(source, rows[:len(KEYS)], KEYS)
    out = tmp_path / "tables" / name
    predict_csv(source, out, str(model_dir), key="trip_id")
    return out


def table_values(path) -> dict[str, float]:
    """What the batch predictions wrote, read back with pyarrow (not through hybrid.py)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pydict()
    return {str(k): p for k, p in zip(table["trip_id"], table["probability"], strict=True)}


def post(server, body):
    return post_json(f"{server.url}/v1/models/{MODEL}:predict", body)


@pytest.fixture
def hybrid_server(tmp_path, exported_models, rows):
    base = tmp_path / "serving"
    push(exported_models[0], base, 1)
    table = make_table(tmp_path, rows, base / "1")
    repository = ModelRepository(MODEL, base, tmp_path / "config", poll_seconds=0.2,
                                 table_path=table)
    server = LocalModelServer(("127.0.0.1", 0), repository,
                              RequestLog(tmp_path / "requests.jsonl", 1.0, seed=0), seed=0)
    server.start_background()
    yield server, table
    server.close()


def test_known_keys_come_from_the_table_as_batch_predicted_and_the_rest_from_the_model(
        hybrid_server, rows, exported_models, tmp_path):
    server, table = hybrid_server
    meta = hybrid.read_meta(table)
    assert (meta.key, meta.version, meta.rows) == ("trip_id", 1, len(KEYS))
    model_only = in_process(exported_models[0], rows[:45])
    # Every key known (as numbers and as strings, as a browser's JSON.stringify sends them).
    known = [{"trip_id": KEYS[i] if i % 2 else str(KEYS[i]), **rows[i]} for i in range(5)]
    status, body, headers = post(server, {"instances": known})
    assert status == 200 and headers["X-Prediction-Source"] == "table"
    # Exactly the batch's float32; a model call (another batch size) agrees to rounding.
    assert body["predictions"] == [table_values(table)[str(KEYS[i])] for i in range(5)]
    np.testing.assert_allclose(body["predictions"], model_only[:5], rtol=1e-6)
    # A known key, an unknown key, a row without one: the model answers the last two.
    mixed = [{"trip_id": KEYS[7], **rows[7]}, {"trip_id": 99, **rows[42]}, rows[44]]
    status, body, headers = post(server, {"instances": mixed})
    assert status == 200 and headers["X-Prediction-Source"] == "table=1,model=2"
    np.testing.assert_allclose(body["predictions"], model_only[[7, 42, 44]], rtol=1e-6)
    # Columnar inputs carry the key as one more input.
    columns = {name: [r[name] for r in rows[:3]] for name in rows[0]}
    status, body, headers = post(server, {"inputs": {**columns, "trip_id": KEYS[:2] + [5]}})
    assert status == 200 and headers["X-Prediction-Source"] == "table=2,model=1"
    np.testing.assert_allclose(body["outputs"], model_only[:3], rtol=1e-6)
    logged = [json.loads(line) for line in (tmp_path / "requests.jsonl").open()]
    assert [(r.get("lookup_key"), r.get("source")) for r in logged[5:8]] == [
        ("1007", "table"), ("99", "model"), (None, None)]
    # A known key does not excuse a bad row: the raw-row contract still judges it.
    status, body, _ = post(server, {"instances": [{"trip_id": KEYS[0], **rows[0],
                                                   "fare": "twelve"}]})
    assert status == 400 and "'fare': 'twelve' is not a number" in body["error"]
    status, body, _ = post(server, {"inputs": {**columns, "trip_id": KEYS[:2]}})
    assert status == 400 and "2 keys for 3 examples" in body["error"]
    status, body, _ = post(server, {"inputs": {**columns, "trip_id": "1000"}})
    assert status == 400 and "must be a list" in body["error"]


def test_a_stale_table_is_ignored_a_new_one_loaded_and_a_broken_one_never_served(
        hybrid_server, rows, exported_models, tmp_path):
    server, table = hybrid_server
    base = server.repository.base_path
    push(exported_models[1], base, 2)  # a new version: the table's answers are version 1's
    assert wait_for(lambda: set(server.repository.snapshot.versions) == {2})
    keyed = [{"trip_id": KEYS[i], **rows[i]} for i in range(4)]
    status, body, headers = post(server, {"instances": keyed})
    assert status == 200 and headers["X-Prediction-Source"] == "model"
    assert headers["X-Served-By"] == "2;latest"
    np.testing.assert_allclose(body["predictions"], in_process(exported_models[1], rows[:4]),
                               rtol=1e-6)
    # Batch predictions by version 2, written over the table: picked up while serving.
    fresh = make_table(tmp_path, rows, base / "2", name="fresh.parquet")
    shutil.copy(hybrid.meta_path(fresh), hybrid.meta_path(table))
    shutil.copy(fresh, table)
    assert wait_for(lambda: post(server, {"instances": keyed})[2]["X-Prediction-Source"]
                    == "table")
    # A table whose meta file is gone is refused; the one loaded before keeps answering.
    hybrid.meta_path(table).unlink()
    table.write_bytes(table.read_bytes())  # touched: the server looks again
    assert wait_for(lambda: server.repository._table_seen is not None
                    and server.repository._table_seen[1] is None)
    status, body, headers = post(server, {"instances": keyed})
    assert headers["X-Prediction-Source"] == "table"
    assert body["predictions"] == [table_values(table)[str(k)] for k in KEYS[:4]]
    np.testing.assert_allclose(body["predictions"], in_process(exported_models[1], rows[:4]),
                               rtol=1e-6)


def test_keys_are_logged_before_a_table_exists_and_its_first_version_is_then_used(
        tmp_path, rows, exported_models):
    base = tmp_path / "serving"
    push(exported_models[0], base, 1)
    table = tmp_path / "tables" / "table.parquet"
    repository = ModelRepository(MODEL, base, poll_seconds=0.2, table_path=table,
                                 lookup_key="trip_id")
    server = LocalModelServer(("127.0.0.1", 0), repository,
                              RequestLog(tmp_path / "requests.jsonl", 1.0, seed=0), seed=0)
    server.start_background()
    try:
        keyed = [{"trip_id": KEYS[i], **rows[i]} for i in range(3)]
        status, _, headers = post(server, {"instances": keyed})
        assert status == 200 and headers["X-Prediction-Source"] == "model"
        logged = [json.loads(line) for line in (tmp_path / "requests.jsonl").open()]
        keys, _ = hybrid.read_request_keys(tmp_path / "requests.jsonl")
        assert keys == ["1000", "1001", "1002"] and logged[0]["source"] == "model"
        assert make_table(tmp_path, rows, base / "1") == table
        assert wait_for(lambda: post(server, {"instances": keyed})[2]["X-Prediction-Source"]
                        == "table")
    finally:
        server.close()


@pytest.mark.parametrize("content, meta, message", [
    ("trip_id,probability\n1,0.5\n", None, "meta file serving.batch_predict writes"),
    ("trip_id,probability\n1,NaN\n", "trip_id", "probability nan is not a number in [0, 1]"),
    ("trip_id,probability\n1,1.5\n", "trip_id", "probability 1.5 is not a number in [0, 1]"),
    ("trip_id,probability\n1,0.5\n1,0.25\n", "trip_id", "two different probabilities"),
    ("id,probability\n1,0.5\n", "trip_id", "no column(s) ['trip_id']"),
    ("trip_id,probability\n1,x\n", "trip_id", "probability 'x' is not a number"),
])
def test_a_table_that_cannot_be_trusted_is_refused_with_the_reason(tmp_path, content, meta,
                                                                     message):
    path = tmp_path / "table.csv"
    path.write_text(content)
    if meta:
        hybrid.write_meta(path, hybrid.TableMeta(key=meta, version=1))
    with pytest.raises(hybrid.HybridError) as e:
        hybrid.PredictionTable.load(path)
    assert message in str(e.value)


def zipf_keys(rng, count: int, keys: int, s: float, seed: int = 0) -> list[str]:
    """`count` requests over `keys` keys, the r-th most requested with weight 1/r^s; the
    ranks are shuffled by `seed` (a key's name says nothing of its rank)."""
    weights = 1.0 / np.arange(1, keys + 1) ** s
    names = np.random.default_rng(seed).permutation(keys)
    return [f"k{names[r]}" for r in rng.choice(keys, count, p=weights / weights.sum())]


def test_the_analysis_recommends_by_peakedness_and_predicts_the_hit_rate():
    rng = np.random.default_rng(5)
    stream = zipf_keys(rng, 80_000, 50_000, 1.1)
    history, future = stream[:40_000], stream[40_000:]
    result = hybrid.profile(history)
    assert result.recommendation == "hybrid" and 0 < result.table_keys < result.distinct
    assert result.top_share[10] > 0.1 and result.entropy_bits < np.log2(result.distinct)
    # A table of the recommended size built from the whole history, met by later traffic.
    table = set(hybrid.top_keys(history, result.table_keys))
    measured = np.mean([k in table for k in future])
    assert abs(measured - result.predicted_hit_rate) < 0.05, (measured, result)
    spread = [f"u{i}" for i in rng.integers(0, 10**7, 20_000)]
    assert hybrid.profile(spread).recommendation == "dynamic"
    closed = [f"c{i}" for i in rng.integers(0, 50, 5_000)]
    small = hybrid.profile(closed)
    assert small.recommendation == "static" and small.table_keys == 50
    with pytest.raises(hybrid.HybridError, match="too few"):
        hybrid.profile(["a"] * 5)


def test_the_analysis_command_reads_request_logs_and_csvs_and_names_bad_lines(tmp_path, capsys):
    rng = np.random.default_rng(8)
    keys = zipf_keys(rng, 5_000, 20_000, 1.2)
    log = tmp_path / "requests.jsonl"
    with log.open("w") as f:
        for i, key in enumerate(keys):
            f.write(json.dumps({"time": 1e9 + i, "lookup_key": key, "prediction": 0.5}) + "\n")
        f.write(json.dumps({"time": 2e9, "prediction": 0.5}) + "\n")  # no key: counted apart
    out = tmp_path / "keys.csv"
    assert hybrid.main(["analyze", "--request-log", str(log), "--write-keys", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5,000 keyed requests (1 without a key)" in text and "HYBRID" in text
    written = list(csv.reader(out.open()))
    assert written[0] == ["key"] and len(written) > 10
    assert written[1][0] == hybrid.top_keys(keys, 1)[0]
    assert hybrid.main(["analyze", "--request-log", str(log), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["requests"] == 5_000 and figures["table_keys"] == len(written) - 1
    with (tmp_path / "log.csv").open("w") as f:
        f.write("trip_id,fare\n" + "".join(f"{k},1.0\n" for k in keys))
    assert hybrid.main(["analyze", "--request-log", str(tmp_path / "log.csv"),
                        "--key", "trip_id", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["distinct"] == figures["distinct"]
    log.write_text(log.read_text() + "{not json\n")
    assert hybrid.main(["analyze", "--request-log", str(log)]) == 2
    assert "line 5002 is not JSON" in capsys.readouterr().err
    assert hybrid.main(["analyze", "--request-log", str(tmp_path / "log.csv")]) == 2
    assert "name its key column with --key" in capsys.readouterr().err

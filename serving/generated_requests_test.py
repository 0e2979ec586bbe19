"""Generated requests, not only chosen ones: Hypothesis writes methods, paths, headers and
bodies (JSON of any shape, rows with odd values, bytes that are no JSON) and sends them as
raw bytes to the real `serving.server` and `serving.router` processes. Every answer must be
a 2xx, or a 4xx or 503 with a JSON error, within the request timeout; never a 5xx, never a
hang; and both processes serve on. GENERATED_REQUESTS sets how many (CI: 120 per process;
`benchmarks/generated_requests.py` runs more)."""

import contextlib
import http.client
import json
import os
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import features as F

COUNT = int(os.environ.get("GENERATED_REQUESTS", "120"))
MODEL = "taxi-big-tipper"
TIMEOUT = 3 + 10  # the processes' --request-timeout, and time to answer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=30)
feature_values = st.one_of(st.none(), st.text(max_size=20), st.integers(-10**20, 10**20),
                           st.floats(), st.booleans(), st.lists(st.integers(), max_size=3),
                           st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
rows = st.fixed_dictionaries(
    {}, optional={f.name: feature_values for f in F.SERVING_FEATURES}
    | {"tips": feature_values, "extra": feature_values})


def near_valid_rows(row: dict) -> st.SearchStrategy:
    """A real row with a few of its values replaced or left out: what reaches the model."""
    names = sorted(row)
    return st.builds(
        lambda changes, dropped: {**{k: v for k, v in row.items() if k not in dropped},
                                  **changes},
        st.dictionaries(st.sampled_from(names), feature_values, max_size=2),
        st.sets(st.sampled_from(names), max_size=2))


def predict_bodies(row: dict) -> st.SearchStrategy:
    rows_ = rows | near_valid_rows(row) | near_valid_rows(row)
    return st.one_of(
        st.builds(lambda r: {"instances": r}, st.lists(rows_, max_size=4)),
        st.builds(lambda c: {"inputs": c}, st.dictionaries(
            st.sampled_from([f.name for f in F.SERVING_FEATURES]),
            st.lists(feature_values, max_size=3), max_size=4)),
        st.builds(lambda r, s: {"instances": r, "signature_name": s}, st.lists(rows_, max_size=2),
                  st.sampled_from(["serving_examples", "transform_features", "nope", ""])),
        st.builds(lambda k: {"labels": k}, st.lists(st.fixed_dictionaries(
            {"key": st.text(max_size=10), "label": json_values}), max_size=3)),
    )


def bodies(row: dict) -> st.SearchStrategy:
    return st.one_of(
        predict_bodies(row).map(lambda b: json.dumps(b).encode()),
        predict_bodies(row).map(lambda b: json.dumps(b).encode()),
        json_values.map(lambda b: json.dumps(b).encode()),
        st.binary(max_size=300),
        st.just(b""),
    )


suffixes = st.sampled_from(["", ":predict", ":feedback", "/metadata", ":FEEDBACK", "%3Apredict",
                            ":predict?x=1", "/", ":", "::predict"])
middles = st.sampled_from(["", "/versions/1", "/versions/2", "/versions/99", "/versions/x",
                           "/labels/stable", "/labels/canary", "/labels/", "/versions/-1"])
predict_paths = st.builds(lambda m: f"/v1/models/{MODEL}{m}:predict",
                          st.sampled_from(["", "", "/versions/1", "/versions/2"]))
paths = st.one_of(
    predict_paths,
    predict_paths,
    st.builds(lambda m, s, name: f"/v1/models/{name}{m}{s}", middles, suffixes,
              st.sampled_from([MODEL, MODEL, "other", "%2e%2e", ""])),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=60)
    .map(lambda t: "/" + t),
)
header_names = st.sampled_from(["Authorization", "X-Request-Id", "Content-Type", "Expect",
                                "X-Forwarded-For", "Via", "Accept", "X-Whatever",
                                "Transfer-Encoding"])
header_values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=80),
    st.sampled_from(["Bearer x", "Bearer", "100-continue", "chunked", "application/json",
                     "a" * 200]))


def requests(row: dict) -> st.SearchStrategy:
    """Whole requests around one real raw row (as a client sends it)."""
    return st.fixed_dictionaries({
        "method": st.sampled_from(["POST"] * 14 + ["GET"] * 2 + ["PUT", "DELETE", "OPTIONS",
                                                                 "PATCH", "HEAD", "BREW"]),
        "path": paths,
        "headers": st.dictionaries(header_names, header_values, max_size=3),
        "body": bodies(row),
        "length": st.sampled_from(["exact", "exact", "exact", "exact", "none", "garbage"]),
    })


def send(port: int, request: dict) -> http.client.HTTPResponse:
    """The request as raw bytes (no client library to tidy it up), and its parsed answer."""
    body = request["body"]
    # (A body shorter than its Content-Length is the slow-loris test's case.)
    length = {"exact": str(len(body)), "garbage": "12abc", "none": None}[request["length"]]
    lines = [f"{request['method']} {request['path']} HTTP/1.1", "Host: 127.0.0.1",
             "Connection: close", *(f"{k}: {v}" for k, v in request["headers"].items())]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body if length else b"")
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with contextlib.suppress(OSError):  # answered and closed before all was sent
        sock.sendall(data)
    response = http.client.HTTPResponse(sock, method=request["method"])
    response.begin()
    response.body = response.read()
    sock.close()
    return response


def check_answer(response: http.client.HTTPResponse, request: dict) -> None:
    status = response.status
    assert status < 500 or status == 503, (status, response.body[:500], request)
    if status >= 400 and request["method"] != "HEAD":
        error = json.loads(response.body)["error"]
        assert isinstance(error, str) and error, (status, response.body[:500])


def _run(served, via: str, row: dict) -> None:
    port = served.ports[via]

    @settings(max_examples=COUNT, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests(row))
    def one(request):
        try:
            response = send(port, request)
        except TimeoutError:
            raise AssertionError(f"no answer within {TIMEOUT} s: {request}") from None
        check_answer(response, request)

    one()
    assert served.alive()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 200")


def test_generated_requests_to_the_server(served, rows):
    _run(served, "server", rows[0])


def test_generated_requests_to_the_router(served, rows):
    _run(served, "router", rows[0])

"""The pipeline submitted to open-source Kubeflow Pipelines, through KFP's own client.

The client (kfp.Client, its generated REST API) is real; the endpoint is a small KFP API
server on 127.0.0.1 that answers the calls a run submission makes (health, experiments,
runs) and, like KFP's backend, refuses a spec with a resolver task ("resolver not
implemented yet" in KFP's argo compiler). The DAG itself runs in tests/test_vertex_offline.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import vertex_runner
from models.local_cluster import free_ports
from pipeline import configs
from pipeline.orchestration import kubeflow
from pipeline.pipeline import create_components

IMAGE = "registry.example.com/ml/taxi-pipeline:1.4"
SETTINGS = ["--image", IMAGE, "--output-root", "gs://ml-bucket/taxi",
            "--data-root", "gs://ml-bucket/data"]


class KfpApi(BaseHTTPRequestHandler):
    """The v2beta1 endpoints a run submission calls; what it receives is kept on the server."""

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._send(200, {"multi_user": False})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._send(200, {"experiments": self.server.experiments})
        self._send(404, {"error": self.path})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/apis/v2beta1/experiments":
            experiment = {**body, "experiment_id": f"exp-{len(self.server.experiments)}"}
            self.server.experiments.append(experiment)
            return self._send(200, experiment)
        if self.path == "/apis/v2beta1/runs":
            executors = body["pipeline_spec"]["deploymentSpec"]["executors"]
            if any("resolver" in e for e in executors.values()):
                return self._send(400, {"error": "resolver not implemented yet"})
            self.server.runs.append(body)
            return self._send(200, {**body, "run_id": f"run-{len(self.server.runs)}",
                                    "state": "PENDING"})
        self._send(404, {"error": self.path})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def kfp_api(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client keeps a context file there
    (port,) = free_ports(1)
    server = ThreadingHTTPServer(("127.0.0.1", port), KfpApi)
    server.experiments, server.runs = [], []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def executor_args(spec: dict, task: str) -> str:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    return " ".join(spec["deploymentSpec"]["executors"][label]["container"]["args"])


def test_a_run_reaches_kubeflow_with_in_cluster_pieces_for_the_vertex_ones(kfp_api, tmp_path):
    server, url = kfp_api
    job = tmp_path / "job.json"
    assert vertex_runner.main(["--kfp-host", url, *SETTINGS, "--enable-tuning",
                               "--output", str(job)]) == 0
    (experiment,) = server.experiments
    assert experiment["display_name"] == "taxi-big-tipper"
    (run,) = server.runs
    assert run["experiment_id"] == experiment["experiment_id"]
    assert run["runtime_config"]["pipeline_root"] == "gs://ml-bucket/taxi/pipelines/taxi-big-tipper"
    spec = run["pipeline_spec"]
    # The same DAG as every other runner, with the served model in the resolver's place and,
    # flat data having no previous span and the cluster no resolvers, no drift check.
    local = {c.id for c in create_components(configs.load(env={}, enable_tuning=True,
                                                          report_in_pipeline=True))}
    assert set(spec["root"]["dag"]["tasks"]) == \
        local - {"latest_blessed_model_resolver", "DriftCheck"} | {"ServedModel"}
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {IMAGE}
    assert not any("google_cloud_ai_platform" in json.dumps(e) for e in executors)
    # Trainer and Tuner in their own pods; the Pusher writes where the cluster serves from.
    assert "tfx.components.trainer.executor.GenericExecutor" in executor_args(spec, "Trainer")
    assert "tfx.components.tuner.executor.Executor" in executor_args(spec, "Tuner")
    assert "served_model._Executor" in executor_args(spec, "Evaluator")
    pusher = spec["root"]["dag"]["tasks"]["Pusher"]["inputs"]["parameters"]
    destination = pusher["push_destination"]["runtimeValue"]["constantValue"]["stringValue"]
    assert json.loads(destination)["filesystem"]["base_directory"] == \
        "gs://ml-bucket/taxi/serving/taxi-big-tipper"
    evaluator = spec["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["artifacts"]
    assert evaluator["baseline_model"]["taskOutputArtifact"]["producerTask"] == "ServedModel"


def test_a_spec_kubeflow_cannot_run_is_refused_before_it_is_sent(kfp_api, tmp_path):
    server, url = kfp_api
    job = tmp_path / "vertex.json"
    assert vertex_runner.main([*SETTINGS, "--gcp-project", "p", "--gcp-region", "us-central1",
                               "--output", str(job)]) == 0
    config = configs.load("kubeflow", env={}, image=IMAGE, output_root="gs://ml-bucket/taxi",
                          data_root="gs://ml-bucket/data")
    with pytest.raises(kubeflow.KubeflowError, match="is a resolver, which Kubeflow"):
        kubeflow.submit(job, config, host=url, namespace=None, experiment="x",
                        enable_caching=True)
    assert server.runs == []


def test_an_endpoint_that_does_not_answer_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    (port,) = free_ports(1)  # nothing listens there
    code = vertex_runner.main(["--kfp-host", f"http://127.0.0.1:{port}", *SETTINGS,
                               "--output", str(tmp_path / "job.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"Kubeflow Pipelines at http://127.0.0.1:{port}" in err and "could not be" in err


@pytest.mark.parametrize("flags, message", [
    (["--training-workers", "1"], "--training-workers 0"),
    (["--input-pattern", "span-{SPAN}/*"], "needs ExampleGen's driver"),
    (["--serving-endpoint", "e"], "serving_endpoint is a Vertex endpoint"),
    (["--output-root", "/data/out"], "output_root must be a URI the cluster's pods can read"),
])
def test_settings_kubeflow_cannot_honour_are_refused_with_the_flag(flags, message, capsys,
                                                                    tmp_path):
    code = vertex_runner.main(["--kfp-host", "http://127.0.0.1:9", *SETTINGS, *flags,
                               "--output", str(tmp_path / "job.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Kubeflow settings missing or invalid" in err and message in err


def test_a_kubeflow_job_is_never_sent_to_vertex(capsys, tmp_path):
    code = vertex_runner.main(["--target", "kubeflow", "--submit", *SETTINGS,
                               "--output", str(tmp_path / "job.json")])
    assert code == 2 and "give --kfp-host URL" in capsys.readouterr().err


def test_the_package_is_the_pipeline_spec_as_yaml(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"pipelineSpec": {"pipelineInfo": {"name": "n"},
                                                "deploymentSpec": {"executors": {}}},
                               "runtimeConfig": {}}))
    package = kubeflow.write_package(job)
    assert package == tmp_path / "job.yaml"
    assert Path(package).read_text().startswith("pipelineInfo:")

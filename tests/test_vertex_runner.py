"""Compiling for Vertex AI Pipelines and submitting with an injected fake client: nothing
reaches GCP."""

import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import vertex_runner
from pipeline import configs
from pipeline.pipeline import RUN_FN, TUNER_FN, create_components
from settings.layout import PROJECT_ROOT

ROOT = PROJECT_ROOT
IMAGE = "us-docker.pkg.dev/demo-project/taxi/pipeline:abc123"
SETTINGS = ["--gcp-project", "demo-project", "--gcp-region", "europe-west4", "--image", IMAGE,
            "--output-root", "gs://demo-bucket/taxi", "--data-root", "gs://demo-bucket/data",
            "--service-account", "runner@demo-project.iam.gserviceaccount.com",
            "--training-machine-type", "n1-highmem-8", "--training-accelerator-type",
            "NVIDIA_TESLA_T4", "--training-accelerator-count", "1"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("vertex") / "pipeline.json"
    assert vertex_runner.main([*SETTINGS, "--enable-tuning", "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    return out, spec


def test_compiled_json_is_a_vertex_pipeline_job(compiled):
    _, spec = compiled
    job = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineJob(), ignore_unknown_fields=True)
    assert job.pipeline_spec["pipelineInfo"]["name"] == "taxi-big-tipper"
    assert job.runtime_config.gcs_output_directory == "gs://demo-bucket/taxi/pipelines/taxi-big-tipper"


def test_tasks_are_the_local_pipelines_components(compiled):
    _, spec = compiled
    tasks = set(spec["pipelineSpec"]["root"]["dag"]["tasks"])
    local = {c.id for c in create_components(configs.load(env={}, enable_tuning=True,
                                                          report_in_pipeline=True))}
    # Vertex-only: the resolver compiles into one resolver task per channel.
    resolver_tasks = {t for t in tasks if t.startswith("latest_blessed_model_resolver-")}
    assert len(resolver_tasks) == 2
    # Local-only: a flat layout's drift check against the blessed model's data (MLMD history).
    assert tasks - resolver_tasks == local - {"latest_blessed_model_resolver", "DriftCheck"}


def test_on_vertex_transform_writes_the_rows_the_training_replicas_read(compiled):
    _, spec = compiled
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    for task in ("Trainer", "Tuner"):
        source = tasks[task]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"]
        assert source == {"producerTask": "Transform", "outputArtifactKey": "transformed_examples"}
        assert json.loads(_parameter(spec, task, "custom_config"))["raw_examples"] is False


def test_locally_the_trainer_and_tuner_read_the_raw_window_through_the_graph():
    """Locally Transform only analyses: the Tuner and Trainer read SpanWindow's raw rows
    and are told so; `yes` restores the written rows."""
    def wiring(**settings):
        nodes = {c.id: c for c in create_components(configs.load(env={}, enable_tuning=True,
                                                                  **settings))}
        return nodes, {task: (nodes[task].inputs["examples"].producer_component_id,
                              json.loads(nodes[task].exec_properties["custom_config"])
                              ["raw_examples"])
                       for task in ("Tuner", "Trainer")}

    nodes, read = wiring()
    assert read == {"Tuner": ("SpanWindow", True), "Trainer": ("SpanWindow", True)}
    assert "transformed_examples" not in nodes["Transform"].outputs
    assert json.loads(nodes["Transform"].exec_properties["splits_config"]).get("transform") \
        is None
    nodes, read = wiring(transform_materialize="yes")
    assert read == {"Tuner": ("Transform", False), "Trainer": ("Transform", False)}
    assert json.loads(nodes["Transform"].exec_properties["splits_config"])["transform"] == \
        ["train_0", "eval"]


def test_the_run_report_is_written_by_the_last_task_after_the_push(compiled):
    _, spec = compiled
    task = spec["pipelineSpec"]["root"]["dag"]["tasks"]["RunReport"]
    artifacts = task["inputs"]["artifacts"]
    assert artifacts["pushed_model"]["taskOutputArtifact"]["producerTask"] == "Pusher"
    assert artifacts["evaluation"]["taskOutputArtifact"]["producerTask"] == "Evaluator"
    thresholds = json.loads(_parameter(spec, "RunReport", "eval_config"))
    assert thresholds["metrics_specs"][0]["metrics"]  # what decided the blessing, for the page


def test_every_container_uses_the_configured_image(compiled):
    _, spec = compiled
    containers = [e["container"] for e in spec["pipelineSpec"]["deploymentSpec"]["executors"]
                  .values() if "container" in e]
    assert len(containers) >= 10
    assert {c["image"] for c in containers} == {IMAGE}


def _executor_args(spec, task):
    executor = spec["pipelineSpec"]["deploymentSpec"]["executors"][f"{task}_executor"]
    return executor["container"]["args"]


def _parameter(spec, task, name):
    params = spec["pipelineSpec"]["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    return params[name]["runtimeValue"]["constantValue"]["stringValue"]


def test_data_components_run_on_dataflow(compiled):
    _, spec = compiled
    for task in ("ExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = " ".join(_executor_args(spec, task))
        assert "--runner=DataflowRunner" in args, task
        assert "--region=europe-west4" in args and "--project=demo-project" in args
        assert "--temp_location=gs://demo-bucket/taxi/tmp" in args
        assert f"--sdk_container_image={IMAGE}" in args


def test_trainer_and_tuner_run_as_vertex_training_jobs_from_the_image(compiled):
    _, spec = compiled
    for task, args_key in (("Trainer", "ai_platform_training_args"),
                           ("Tuner", "ai_platform_tuning_args")):
        custom = json.loads(_parameter(spec, task, "custom_config"))
        assert custom["ai_platform_enable_vertex"] is True
        assert custom["ai_platform_vertex_region"] == "europe-west4"
        # TFX's Vertex Tuner reads job_args["job_spec"]; a flat CustomJobSpec is a KeyError.
        assert custom[args_key]["project"] == "demo-project"
        pool = custom[args_key]["job_spec"]["worker_pool_specs"][0]
        assert pool["machine_spec"] == {"machine_type": "n1-highmem-8",
                                        "accelerator_type": "NVIDIA_TESLA_T4",
                                        "accelerator_count": 1}
        assert pool["container_spec"]["image_uri"] == IMAGE
        assert pool["replica_count"] == 1
        assert custom[args_key]["job_spec"]["service_account"].startswith("runner@")
    # Code is referenced by dotted path inside the image, never by a local module file.
    assert _parameter(spec, "Trainer", "run_fn") == RUN_FN
    assert _parameter(spec, "Tuner", "tuner_fn") == TUNER_FN
    assert "module_file" not in json.dumps(spec["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"])


def test_no_runtime_parameters_and_no_local_paths_in_the_spec(compiled):
    """TFX 1.16's RuntimeParameter handling under KubeflowV2 is fragile: the DAG has none, and
    nothing points at the compiling machine's disk (the schema is the image's copy)."""
    _, spec = compiled
    assert not spec["pipelineSpec"]["root"].get("inputDefinitions")
    text = json.dumps(spec)
    assert str(ROOT) not in text
    assert _parameter(spec, "ImportSchemaGen", "schema_file") == "/pipeline/schema/schema.pbtxt"


def test_pusher_targets_a_vertex_endpoint_when_one_is_configured(tmp_path):
    out = tmp_path / "p.json"
    assert vertex_runner.main([*SETTINGS, "--serving-endpoint", "taxi-endpoint",
                               "--serving-traffic-percent", "20", "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    custom = json.loads(_parameter(spec, "Pusher", "custom_config"))
    assert custom["ai_platform_serving_args"] == {
        "project_id": "demo-project", "endpoint_name": "taxi-endpoint",
        "machine_type": "n1-standard-2", "traffic_percentage": 20}
    # The default is the newest TensorFlow image the Vertex SDK lists, in the region's
    # multi-region (europe-west4 -> europe); tf2-cpu.2-16 is not one of them.
    assert custom["ai_platform_vertex_container_image_uri"] == \
        "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"


def test_batch_inference_runs_on_dataflow_and_appends_to_bigquery(tmp_path):
    out = tmp_path / "p.json"
    assert vertex_runner.main([*SETTINGS, "--inference-data-root", "gs://demo-bucket/unlabelled",
                               "--inference-key", "trip_id", "--predictions-bigquery-table",
                               "demo-project.taxi.predictions", "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    assert "--runner=DataflowRunner" in " ".join(_executor_args(spec, "BulkInferrer"))
    assert _parameter(spec, "InferenceExampleGen", "input_base") == "gs://demo-bucket/unlabelled"
    assert _parameter(spec, "PredictionsExport", "bigquery_table") == \
        "demo-project.taxi.predictions"
    assert _parameter(spec, "PredictionsExport", "key") == "trip_id"
    # Only a blessed candidate scores: BulkInferrer reads the Evaluator's blessing.
    inputs = spec["pipelineSpec"]["root"]["dag"]["tasks"]["BulkInferrer"]["inputs"]["artifacts"]
    assert inputs["model_blessing"]["taskOutputArtifact"]["producerTask"] == "Evaluator"


def test_edge_export_compiles_with_the_blessing_and_the_eval_split(tmp_path):
    out = tmp_path / "p.json"
    assert vertex_runner.main([*SETTINGS, "--export-tflite", "--tflite-max-auc-loss", "0.01",
                               "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    task = spec["pipelineSpec"]["root"]["dag"]["tasks"]["EdgeExport"]
    assert task["inputs"]["artifacts"]["model_blessing"]["taskOutputArtifact"][
        "producerTask"] == "Evaluator"
    params = spec["pipelineSpec"]["root"]["dag"]["tasks"]["EdgeExport"]["inputs"]["parameters"]
    assert params["max_auc_loss"]["runtimeValue"]["constantValue"] == {"doubleValue": 0.01}
    assert _parameter(spec, "EdgeExport", "split") == "eval"


class FakeAiplatform:
    """Records what vertex_runner would send to Vertex AI."""

    def __init__(self):
        self.calls = []
        outer = self

        class PipelineJob:
            def __init__(self, **kwargs):
                outer.calls.append(("PipelineJob", kwargs))
                self.resource_name = "projects/demo-project/locations/europe-west4/pipelineJobs/1"

            def submit(self, **kwargs):
                outer.calls.append(("submit", kwargs))

            def create_schedule(self, **kwargs):
                outer.calls.append(("create_schedule", kwargs))
                return "projects/demo-project/locations/europe-west4/schedules/7"

        self.PipelineJob = PipelineJob

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))


def test_submit_sends_template_root_caching_labels_and_parameters(tmp_path, capsys):
    fake = FakeAiplatform()
    out = tmp_path / "p.json"
    code = vertex_runner.main([*SETTINGS, "--output", str(out), "--submit", "--label",
                               "team=ml", "--label", "commit=abc123"], aiplatform=fake)
    assert code == 0
    names = [name for name, _ in fake.calls]
    assert names == ["init", "PipelineJob", "submit"]
    job = fake.calls[1][1]
    assert job["template_path"] == str(out) and out.exists()
    assert job["pipeline_root"] == "gs://demo-bucket/taxi/pipelines/taxi-big-tipper"
    assert job["enable_caching"] is None  # each task's own setting, as compiled
    assert job["labels"] == {"team": "ml", "commit": "abc123"}
    assert "parameter_values" not in job  # the pipeline declares no runtime parameters
    assert (job["project"], job["location"]) == ("demo-project", "europe-west4")
    assert fake.calls[2][1] == {"service_account": "runner@demo-project.iam.gserviceaccount.com"}
    assert "submitted run" in capsys.readouterr().out


def test_schedule_creates_a_recurring_run(tmp_path):
    fake = FakeAiplatform()
    code = vertex_runner.main([*SETTINGS, "--output", str(tmp_path / "p.json"),
                               "--schedule", "0 3 * * *", "--no-job-cache"], aiplatform=fake)
    assert code == 0
    assert [name for name, _ in fake.calls] == ["init", "PipelineJob", "create_schedule"]
    assert fake.calls[1][1]["enable_caching"] is False
    schedule = fake.calls[2][1]
    assert schedule["cron"] == "0 3 * * *"
    assert schedule["max_concurrent_run_count"] == 1
    assert schedule["display_name"] == "taxi-big-tipper-schedule"


def test_missing_and_malformed_settings_are_listed_without_a_traceback(capsys):
    code = vertex_runner.main(["--gcp-region", "Europe West", "--output-root", "/tmp/not-gcs"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "gcp_project is required (--gcp-project or TAXI_GCP_PROJECT)" in err
    assert "image is required (--image or TAXI_IMAGE)" in err
    assert "gcp_region 'Europe West' is not a region like us-central1" in err
    # Named once, by the flag the user gave, not by the settings derived from it.
    assert "output_root must be a gs:// URI, got '/tmp/not-gcs' (--output-root" in err
    assert "--offline" in err
    for derived in ("pipeline_root", "serving_dir", "dataflow_temp_location"):
        assert derived not in err


def test_dockerfile_installs_the_same_lock_and_copies_paths_that_exist():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM gcr.io/tfx-oss-public/tfx:1.16.0" in dockerfile
    assert "--require-hashes" in dockerfile and "-r requirements.lock" in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert "/pipeline/schema" in dockerfile or "WORKDIR /pipeline" in dockerfile
    assert configs.PROFILES["vertex"]["schema_dir"] == "/pipeline/schema"
    cloudbuild = (ROOT / "cloudbuild.yaml").read_text()
    assert "vertex_runner.py" in cloudbuild and "--submit" in cloudbuild


def test_worker_pools_are_shaped_as_vertex_requires(tmp_path):
    """Pool 0: exactly one primary replica; pool 1: the other workers; pool 2: servers."""
    out = tmp_path / "p.json"
    assert vertex_runner.main([*SETTINGS, "--training-workers", "3",
                               "--training-parameter-servers", "2", "--output", str(out)]) == 0
    custom = json.loads(_parameter(json.loads(out.read_text()), "Trainer", "custom_config"))
    pools = custom["ai_platform_training_args"]["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 3, 2]
    assert pools[2]["machine_spec"] == {"machine_type": "n1-highmem-8"}  # no GPU for servers
    assert custom["distribution"] == "auto"
    # Parameter servers' workers come and go on their own: one restart restarts no other.
    assert "scheduling" not in custom["ai_platform_training_args"]["job_spec"]


@pytest.mark.parametrize("flags, message", [
    (["--training-parameter-servers", "1"], "training_parameter_servers 1 needs training_workers"),
    (["--distribution", "multi_worker"], "multi_worker needs a cluster: training_workers >= 1"),
    (["--distribution", "none", "--training-workers", "2"], "every replica would train its own"),
    (["--distribution", "parameter_server", "--training-workers", "1"],
     "needs training_parameter_servers >= 1 (--training-parameter-servers or "
     "TAXI_TRAINING_PARAMETER_SERVERS)"),
    (["--serving-endpoint", "e", "--serving-image",
      "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-16:latest"],
     "is not one of Vertex AI's prebuilt prediction containers"),
    (["--training-workers", "1", "--backup-every-steps", "0", "--backup-every-seconds", "60"],
     "backup_every_seconds needs a single training process"),
    (["--training-restart-job", "sometimes"], "training_restart_job must be one of auto, yes"),
    (["--backup-every-steps", "-5"], "backup_every_steps and backup_every_seconds must be >= 0"),
])
def test_impossible_training_and_serving_shapes_are_refused_up_front(flags, message, capsys):
    assert vertex_runner.main([*SETTINGS, *flags, "--output", "/dev/null"]) == 2
    assert message in capsys.readouterr().err


def test_submit_without_credentials_says_what_to_do(tmp_path, capsys, monkeypatch):
    from google.auth import exceptions

    class NoCredentials(FakeAiplatform):
        def init(self, **kwargs):
            raise exceptions.DefaultCredentialsError("Your default credentials were not found")

    code = vertex_runner.main([*SETTINGS, "--output", str(tmp_path / "p.json"), "--submit"],
                              aiplatform=NoCredentials())
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "gcloud auth application-default login" in err and str(tmp_path / "p.json") in err


def test_cloudbuild_tags_images_and_needs_a_bucket_when_run_by_hand():
    cloudbuild = (ROOT / "cloudbuild.yaml").read_text()
    # `gcloud builds submit` by hand has no SHORT_SHA: the tag must not come out empty.
    image = next(line for line in cloudbuild.splitlines() if line.strip().startswith("_IMAGE:"))
    assert image.endswith("pipeline:${BUILD_ID}") and "SHORT_SHA" not in image
    assert "_BUCKET is required" in cloudbuild


def test_a_gs_uri_without_a_bucket_is_refused(capsys):
    """An empty _BUCKET substitution makes gs:///taxi; it must not compile."""
    code = vertex_runner.main([*SETTINGS[:6], "--output-root", "gs:///taxi", "--data-root",
                               "gs:///taxi/data", "--output", "/dev/null"])
    assert code == 2
    assert "output_root 'gs:///taxi' names no bucket" in capsys.readouterr().err


def test_a_span_layout_compiles_the_window_and_drift_check_over_the_span_catalog(tmp_path):
    out = tmp_path / "spans.json"
    assert vertex_runner.main([*SETTINGS, "--input-pattern", "span-{SPAN}/*",
                               "--training-spans", "3", "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    catalog = "gs://demo-bucket/taxi/pipelines/taxi-big-tipper/span_catalog"
    for task in ("SpanExamples", "SpanWindow", "DriftCheck"):
        assert _parameter(spec, task, "catalog") == catalog
    window = spec["pipelineSpec"]["root"]["dag"]["tasks"]["SpanWindow"]["inputs"]["parameters"]
    assert window["spans"]["runtimeValue"]["constantValue"]["intValue"] == "3"
    gate = spec["pipelineSpec"]["root"]["dag"]["tasks"]["AnomalyGate"]["inputs"]["artifacts"]
    assert gate["drift"]["taskOutputArtifact"]["producerTask"] == "DriftCheck"


def test_under_require_approval_the_pusher_is_never_served_from_the_cache(tmp_path):
    """It reads the approvals when it runs: a rerun of the same job pushes a model approved
    since, while every other step comes from the cache."""
    out = tmp_path / "approval.json"
    assert vertex_runner.main([*SETTINGS, "--require-approval", "--output", str(out)]) == 0
    spec = json.loads(out.read_text())
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert tasks["Pusher"]["cachingOptions"] == {"enableCache": False}
    assert tasks["Trainer"]["cachingOptions"] == {"enableCache": True}
    custom = json.loads(_parameter(spec, "Pusher", "custom_config"))
    assert custom["require_approval"] is True
    assert custom["control_dir"] == "gs://demo-bucket/taxi/control/taxi-big-tipper"

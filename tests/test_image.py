"""The pipeline image holds what the compiled jobs run: the Dockerfile's COPY lines are
replayed into a folder, and every dotted path of this project that the compiled Vertex and
Kubeflow jobs name is imported in a process that sees that folder and nothing of the
checkout (pipeline/orchestration/image_tree.py)."""

import re
from pathlib import Path

import pytest
import tomli

import vertex_runner
from pipeline.orchestration import image_tree
from settings.layout import PROJECT_ROOT

PYPROJECT = tomli.loads((PROJECT_ROOT / "pyproject.toml").read_text())
PACKAGES = tuple(PYPROJECT["tool"]["importlinter"]["root_packages"])
VERTEX = ["--gcp-project", "demo-project", "--gcp-region", "us-central1",
          "--image", "us-docker.pkg.dev/demo-project/taxi/pipeline:1",
          "--output-root", "gs://demo-bucket/taxi", "--data-root", "gs://demo-bucket/data"]
# Every optional component on, so that every executor and function the DAG can name is named.
EVERYTHING = ["--enable-tuning", "--export-tflite", "--inference-data-root",
              "gs://demo-bucket/unlabelled", "--training-workers", "1"]


@pytest.fixture(scope="module")
def job_texts(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("jobs")
    jobs = {
        "vertex": [*VERTEX, *EVERYTHING, "--serving-endpoint", "taxi"],
        "vertex spans": [*VERTEX, *EVERYTHING, "--input-pattern", "span-{SPAN}/*"],
        "kubeflow": ["--target", "kubeflow", *VERTEX[4:], "--enable-tuning",
                     "--export-tflite"],
    }
    texts = {}
    for name, args in jobs.items():
        path = out / f"{name.replace(' ', '_')}.json"
        assert vertex_runner.main([*args, "--output", str(path)]) == 0, name
        texts[name] = path.read_text()
    return texts


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return image_tree.assemble(tmp_path_factory.mktemp("image") / "root")


def test_every_package_is_in_the_layer_contract_and_whole_in_the_image(image):
    on_disk = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")}
    assert on_disk == set(PACKAGES), "pyproject.toml [tool.importlinter] root_packages"
    for package in PACKAGES:
        modules = {p.relative_to(PROJECT_ROOT) for p in (PROJECT_ROOT / package).rglob("*.py")
                   if not p.name.endswith("_test.py") and p.name != "conftest.py"
                   and "__pycache__" not in p.parts}
        missing = sorted(str(m) for m in modules if not (image / m).is_file())
        assert not missing, f"the image lacks {missing}"
    assert (image / "schema" / "schema.pbtxt").is_file()  # the vertex profile's schema_dir
    assert (image / "vertex_runner.py").is_file()  # cloudbuild.yaml runs it in the image
    leaked = [p for p in image.rglob("*") if p.name.endswith("_test.py") or
              p.parts[len(image.parts)] in ("outputs", "tests", ".git", ".venv")]
    assert not leaked, leaked


def test_every_dotted_path_the_compiled_jobs_name_imports_from_the_image_alone(job_texts,
                                                                               image):
    named = sorted({path for text in job_texts.values()
                    for path in image_tree.dotted_paths(text, PACKAGES)})
    # Candidates that are not this project's code (a file name such as `data.csv`) do not
    # resolve in the checkout either; the rest must resolve in the image.
    not_code = image_tree.import_failures(PROJECT_ROOT, named)
    ours = [p for p in named if p not in not_code]
    for expected in ("models.model.run_fn", "models.preprocessing.preprocessing_fn",
                     "models.tuner.tuner_fn", "pipeline.components.arrow_example_gen.Executor",
                     "pipeline.components.vertex_pusher.Executor", "pipeline.RunReport",
                     "pipeline.components.served_model.ServedModel_Executor",
                     "pipeline.fused_binary_metrics"):
        assert expected in ours, (expected, ours)
    assert image_tree.import_failures(image, ours) == {}


def test_the_streaming_job_s_workers_import_their_code_from_the_image(image):
    """Dataflow's workers run serving/stream.py's transforms from the same image."""
    assert image_tree.import_failures(image, [
        "serving.stream.build", "serving.stream_steps.ParseEvent",
        "serving.stream_steps.RawRowsModelHandler", "serving.stream_steps.PredictionRows",
        "serving.stream_steps.WindowFigures",
        "models.contract.instance", "models.model.instance_tensors"]) == {}


def test_the_dockerfile_of_file_by_file_copies_fails_where_vertex_would(tmp_path):
    """The Dockerfile as it was (every package but data/ whole, data/ two files), with the
    packages this layout added: ExampleGen's executor cannot import its readers."""
    old = tmp_path / "Dockerfile"
    old.write_text("FROM gcr.io/tfx-oss-public/tfx:1.16.0\nWORKDIR /pipeline\n"
                   "COPY requirements.lock ./\nCOPY pyproject.toml README.md ./\n"
                   + "".join(f"COPY {p} ./{p}\n" for p in PACKAGES if p != "data")
                   + "COPY data/__init__.py data/bundled.py ./data/\nCOPY schema ./schema\n"
                   "ENV TF_USE_LEGACY_KERAS=1 PYTHONPATH=/pipeline\n")
    tree = image_tree.assemble(tmp_path / "root", dockerfile=old)
    assert sorted(p.name for p in (tree / "data").iterdir()) == ["__init__.py", "bundled.py"]
    failures = image_tree.import_failures(tree, ["pipeline.components.arrow_example_gen.Executor",
                                                 "models.model.run_fn"])
    assert list(failures) == ["pipeline.components.arrow_example_gen.Executor"]
    assert re.match(r"ImportError: cannot import name '(readers|example_encoding)' from 'data'",
                    failures["pipeline.components.arrow_example_gen.Executor"])


@pytest.mark.parametrize("pattern, path, ignored", [
    ("outputs", "outputs/pipelines/x.json", True),
    ("**/*_test.py", "serving/server_test.py", True),
    ("**/*_test.py", "serving/server.py", False),
    ("**/__pycache__", "models/__pycache__/model.cpython-310.pyc", True),
    ("data/raw", "data/readers.py", False),
    ("*.egg-info", "taxi.egg-info/PKG-INFO", True),
    ("tests", "pipeline/tests_helper.py", False),
])
def test_dockerignore_patterns_match_as_docker_matches_them(pattern, path, ignored):
    rules = [(True, image_tree.pattern_regex(pattern))]
    assert image_tree.ignored(path, rules) is ignored


def test_an_exception_brings_a_file_back_and_the_last_rule_wins():
    rules = [(True, image_tree.pattern_regex("docs")),
             (False, image_tree.pattern_regex("docs/keep.md"))]
    assert image_tree.ignored("docs/drop.md", rules)
    assert not image_tree.ignored("docs/keep.md", rules)

"""The TF Serving deployment files agree with each other and with the model they serve."""

import re
from pathlib import Path

import tensorflow as tf
import yaml

from serving import model_config
from serving.rollout import Rollouts

DEPLOY = Path(__file__).resolve().parent / "deploy"


def flags(args: list[str]) -> set[str]:
    return {a.split("=")[0] for a in args if a.startswith("--")}


def test_every_deployment_runs_the_tf_serving_that_matches_our_tensorflow_with_the_same_flags():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["tf-serving"]
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    container = documents[0]["spec"]["template"]["spec"]["containers"][0]
    script = (DEPLOY / "docker-run.sh").read_text()
    images = {compose["image"], container["image"],
              re.search(r"(tensorflow/serving:\S+)", script).group(1)}
    major_minor = ".".join(tf.__version__.split(".")[:2])
    assert images == {f"tensorflow/serving:{major_minor}.1"}
    script_flags = set(re.findall(r"(--[a-z_]+)=", script.split("tensorflow/serving")[1]))
    assert flags(compose["command"]) == flags(container["args"]) == script_flags
    assert "--enable_model_warmup" in script_flags  # SafeToServe ships warmup requests


def test_batching_parameters_are_the_documented_text_proto():
    text = (DEPLOY / "batching_parameters.txt").read_text()
    fields = dict(re.findall(r"^(\w+) \{ value: (\d+) \}", text, re.M))
    assert int(fields["max_batch_size"]) >= 1 and int(fields["batch_timeout_micros"]) > 0


def test_models_config_can_name_the_path_tf_serving_sees(tmp_path, exported_models):
    import shutil

    shutil.copytree(exported_models[0], tmp_path / "serving" / "3")
    rollouts = Rollouts("taxi-big-tipper", tmp_path / "serving", tmp_path / "config",
                        config_base_path="/models/taxi-big-tipper")
    rollouts.set_stable()
    config = model_config.read_config(tmp_path / "config" / model_config.CONFIG_FILE)
    entry = config.model_config_list.config[0]
    assert entry.base_path == "/models/taxi-big-tipper" and entry.model_platform == "tensorflow"
    assert dict(entry.version_labels) == {"stable": 3}

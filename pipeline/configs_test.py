"""Settings: defaults, environment and flags, and clear errors."""

import argparse

import pytest

from pipeline import configs


def test_defaults_derive_paths_from_the_output_root():
    config = configs.load(env={}, output_root="/x")
    assert config.pipeline_root == "/x/pipelines/taxi-big-tipper"
    assert config.metadata_path == "/x/metadata/taxi-big-tipper.db"
    assert config.serving_dir == "/x/serving/taxi-big-tipper"


def test_local_paths_become_absolute_and_uris_stay(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config = configs.load(env={}, output_root="outputs", data_root="gs://bucket/data")
    assert config.output_root == str(tmp_path / "outputs")
    assert config.serving_dir == str(tmp_path / "outputs" / "serving" / "taxi-big-tipper")
    assert config.data_root == "gs://bucket/data"


def test_environment_then_flags_override_in_that_order():
    env = {"TAXI_TRAIN_STEPS": "77", "TAXI_ENABLE_TUNING": "yes", "TAXI_SLICES": "company"}
    config = configs.load(env=env)
    assert (config.train_steps, config.enable_tuning, config.slices) == (77, True, ("company",))
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile")
    configs.add_arguments(parser)
    args = parser.parse_args(["--train-steps", "5", "--no-enable-tuning", "--hparams",
                              '{"learning_rate": 0.01}'])
    config = configs.from_args(args, env=env)
    assert (config.train_steps, config.enable_tuning) == (5, False)
    assert config.hparams == {"learning_rate": 0.01}
    assert config.slices == ("company",)  # untouched by flags: the environment's value stays


@pytest.mark.parametrize("overrides, message", [
    ({"train_steps": "many"}, "train_steps: cannot read 'many' as int"),
    ({"train_steps": 0}, "train_steps must be >= 1"),
    ({"min_auc": 1.5}, "min_auc must be in"),
    ({"beam_direct_running_mode": "fast"}, "beam_direct_running_mode must be"),
    ({"hparams": "[1, 2]"}, "hparams: cannot read"),
    ({"no_such_setting": 1}, "unknown setting 'no_such_setting'"),
    ({"training_spans": 0}, "training_spans must be >= 1"),
    ({"drift_action": "ignore"}, "drift_action must be one of stop, warn"),
    ({"recency_half_life": -1}, "recency_half_life must be >= 0"),
    ({"transform_materialize": "maybe"}, "transform_materialize must be one of auto, yes, no"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(configs.ConfigError, match=message):
        configs.load(env={}, **overrides)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(configs.ConfigError, match="known: local"):
        configs.load("staging", env={})


def test_beam_args_follow_the_running_mode():
    assert "--direct_num_workers=1" in configs.load(env={}).beam_pipeline_args
    multi = configs.load(env={}, beam_direct_running_mode="multi_processing", beam_num_workers=2)
    assert "--direct_running_mode=multi_processing" in multi.beam_pipeline_args
    assert "--direct_num_workers=2" in multi.beam_pipeline_args


def test_auto_running_mode_goes_multi_processing_only_for_large_input(tmp_path, monkeypatch):
    monkeypatch.setattr(configs.os, "cpu_count", lambda: 2)
    (tmp_path / "data.csv").write_bytes(b"x" * 3_000_000)
    small = configs.load(env={}, data_root=str(tmp_path), beam_multi_processing_min_mb=4)
    assert small.running_mode()[0] == "in_memory"
    assert "--direct_num_workers=1" in small.beam_pipeline_args
    large = configs.load(env={}, data_root=str(tmp_path), beam_multi_processing_min_mb=2)
    mode, why = large.running_mode()
    assert mode == "multi_processing" and "3 MB of input >= 2 MB" in why
    assert "--direct_num_workers=0" in large.beam_pipeline_args  # one per core
    monkeypatch.setattr(configs.os, "cpu_count", lambda: 1)
    assert large.running_mode()[0] == "in_memory"  # one core: nothing to share out


def test_auto_running_mode_sizes_the_span_a_run_ingests(tmp_path):
    for span, size in ((1, 5_000_000), (2, 1_000_000)):
        (tmp_path / f"span-{span}").mkdir()
        (tmp_path / f"span-{span}" / "data.csv").write_bytes(b"x" * size)
    spans = {"data_root": str(tmp_path), "input_pattern": "span-{SPAN}/*"}
    assert configs.input_bytes(configs.load(env={}, **spans)) == 1_000_000  # the newest
    assert configs.input_bytes(configs.load(env={}, span=1, **spans)) == 5_000_000
    assert configs.input_bytes(configs.load(env={}, data_root="gs://b/d")) is None


def test_vertex_takes_a_rolling_window_but_refuses_the_analyzer_cache():
    vertex = {"gcp_project": "p", "gcp_region": "us-central1", "image": "i",
              "data_root": "gs://bkt/data", "output_root": "gs://bkt/out"}
    assert configs.load("vertex", env={}, training_spans=3, **vertex).training_spans == 3
    with pytest.raises(configs.ConfigError, match="analyzer_cache runs locally only"):
        configs.load("vertex", env={}, analyzer_cache=True, **vertex)


def test_transform_writes_its_rows_by_default_only_off_the_local_profile():
    vertex = {"gcp_project": "p", "gcp_region": "us-central1", "image": "i",
              "data_root": "gs://bkt/data", "output_root": "gs://bkt/out"}
    assert not configs.load(env={}).materializes()
    assert configs.load(env={}, transform_materialize="yes").materializes()
    assert configs.load("vertex", env={}, **vertex).materializes()
    assert not configs.load("vertex", env={}, transform_materialize="no", training_workers=2,
                            **vertex).materializes()

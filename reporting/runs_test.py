"""What reads ML Metadata reads what stock TFX components write: files this project's own
components add (the Trainer's history.json) may be absent without a crash."""

from reporting import runs


def test_a_json_file_stock_tfx_never_wrote_reads_as_none(tmp_path):
    """TFX's own Trainer writes no history.json; reading its model_run used to end the
    benchmark's summary with TensorFlow's NotFoundError, which is not an OSError."""
    model_run = tmp_path / "Trainer" / "model_run" / "7"
    model_run.mkdir(parents=True)
    assert runs._read_json(str(model_run / "history.json")) is None
    (model_run / "history.json").write_text('{"steps": 3}')
    assert runs._read_json(str(model_run / "history.json")) == {"steps": 3}
    (model_run / "broken.json").write_text("{")
    assert runs._read_json(str(model_run / "broken.json")) is None

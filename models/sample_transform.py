"""A real Transform output of a handful of rows, outside the pipeline: for tests,
benchmarks and experiments that need transformed data without running the DAG."""

from __future__ import annotations

import models  # noqa: F401  (Keras 2 before TensorFlow)


def write_transform(root, rows: list[dict], materialize: bool = True):
    """A Transform output dir and gzipped transformed records of `rows` (tf.Transform
    instance dicts), as the Transform component writes them; and the same rows raw, as
    ExampleGen writes them (`raw/`). Without `materialize` only the graph is written (the
    analysis alone), as the local pipeline runs Transform."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from models import features as F
    from models.preprocessing import preprocessing_fn

    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(F.raw_feature_spec("TRAINING")))
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tmp")):
        raw = pipeline | beam.Create(rows)
        if not materialize:
            transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        else:
            (transformed, out_meta), transform_fn = (raw, metadata) | \
                tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
            coder = tft.coders.ExampleProtoCoder(out_meta.dataset_metadata.schema)
            _ = (transformed | beam.Map(coder.encode) | beam.io.WriteToTFRecord(
                str(root / "examples" / "part"), file_name_suffix=".gz"))
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "graph"))
    raw_coder = tft.coders.ExampleProtoCoder(metadata.schema)
    (root / "raw").mkdir()
    with tf.io.TFRecordWriter(str(root / "raw" / "part-00000.gz"), "GZIP") as writer:
        for row in rows:
            writer.write(raw_coder.encode(row))
    # The Transform component also records the raw schema beside the graph.
    raw_metadata_dir = root / "graph" / tft.TFTransformOutput.RAW_METADATA_DIR
    metadata_io.write_metadata(metadata, str(raw_metadata_dir))
    return root


def train_and_export(transform_dir, path, steps: int, seed: int, batch_size: int = 16,
                     hparams: dict | None = None, raw: bool = False) -> str:
    """A real model with the real Transform graph in its signatures, trained `steps` steps
    on `transform_dir`'s examples and exported as the Trainer exports it. With `hparams`
    (overrides of the model's defaults, as the Trainer takes them) `batch_size` is theirs;
    with `raw` it reads the raw rows through the graph, as the local Trainer does."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import model as M

    tf.keras.utils.set_random_seed(seed)
    tf_transform_output = tft.TFTransformOutput(str(transform_dir / "graph"))
    hp = M.hparams({"batch_size": batch_size} if hparams is None else hparams)
    model = M.build_model(hp)
    rows = transform_dir / ("raw" if raw else "examples") / "*"
    data = M.input_fn([str(rows)], tf_transform_output, hp["batch_size"], seed=seed, raw=raw)
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    M.export(model, tf_transform_output, str(path))
    return str(path)


def instance(row: dict[str, str]) -> dict:
    """A CSV row as a tf.Transform instance dict typed by the training feature spec."""
    import tensorflow as tf

    from models import features as F

    out = {}
    for name, spec in F.raw_feature_spec("TRAINING").items():
        value = row.get(name, "")
        if value == "":
            out[name] = []
        elif spec.dtype == tf.string:
            out[name] = [value.encode()]
        elif spec.dtype == tf.int64:
            out[name] = [int(float(value))]
        else:
            out[name] = [float(value)]
    return out


def raw_rows_auc(model_dir, rows: list[dict[str, str]]) -> float:
    """AUC of an exported model on CSV rows, scored the way a client calls it: the raw
    values into serving_default, the label from the rows' tips and fare."""
    import numpy as np
    import tensorflow as tf

    from models import features as F
    from models import model as M

    model = tf.saved_model.load(str(model_dir))
    inputs = M.raw_inputs([{k: v for k, v in r.items() if k in F.BY_NAME} for r in rows])
    scores = model.signatures["serving_default"](**inputs)[M.PROBABILITY].numpy()
    labels = np.array([F.raw_label(r) for r in rows])
    metric = tf.keras.metrics.AUC()
    metric.update_state(labels, scores)
    return float(metric.result())

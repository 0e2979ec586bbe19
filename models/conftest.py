"""Fixtures shared by the model and tuner tests: a real Transform output of a few rows."""

import apache_beam as beam
import pytest
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from models import features as F
from models.preprocessing import preprocessing_fn
from models.preprocessing_test import ROWS


@pytest.fixture(scope="session")
def transform_dir(tmp_path_factory):
    """A Transform output dir and gzipped transformed records, as the Transform component writes."""
    root = tmp_path_factory.mktemp("transform")
    rows = ROWS * 8  # enough for a couple of batches
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(F.raw_feature_spec("TRAINING")))
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tmp")):
        raw = pipeline | beam.Create(rows)
        (transformed, out_meta), transform_fn = (raw, metadata) | \
            tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "graph"))
        coder = tft.coders.ExampleProtoCoder(out_meta.dataset_metadata.schema)
        _ = (transformed | beam.Map(coder.encode) | beam.io.WriteToTFRecord(
            str(root / "examples" / "part"), file_name_suffix=".gz"))
    # The Transform component also records the raw schema beside the graph.
    raw_metadata_dir = root / "graph" / tft.TFTransformOutput.RAW_METADATA_DIR
    metadata_io.write_metadata(metadata, str(raw_metadata_dir))
    return root

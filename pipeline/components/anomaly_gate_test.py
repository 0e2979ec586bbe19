"""What the gate reads from the statistics themselves, on statistics TFDV computes."""

import tensorflow as tf
import tensorflow_data_validation as tfdv

from pipeline.components.anomaly_gate import NO_ROWS, statistics_problems


def statistics(tmp_path, companies: list[bytes]):
    path = str(tmp_path / "examples.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for company in companies:
            example = tf.train.Example()
            example.features.feature["company"].bytes_list.value.append(company)
            example.features.feature["fare"].float_list.value.append(9.5)
            writer.write(example.SerializeToString())
    return tfdv.generate_statistics_from_tfrecord(path)


def test_strings_that_are_not_utf8_are_named_with_their_count(tmp_path):
    latin1 = "Café Cab".encode("latin-1")  # as a Latin-1 export writes it
    found = statistics_problems("train", statistics(
        tmp_path, [b"Flash Cab", latin1, "Café Cab".encode(), latin1]))
    assert found == ["split 'train': feature 'company': 2 value(s) are not UTF-8 "
                     "(re-export the file as UTF-8)"]


def test_a_split_without_rows_is_a_problem_and_clean_data_is_not(tmp_path):
    (tmp_path / "empty").mkdir()
    assert statistics_problems("eval", statistics(tmp_path / "empty", [])) == \
        [f"split 'eval': {NO_ROWS}"]
    assert statistics_problems("train", statistics(tmp_path, [b"Flash Cab"])) == []

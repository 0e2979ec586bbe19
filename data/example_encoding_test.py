"""The vectorised encoder against protobuf's own deterministic serialization."""

import numpy as np
import pyarrow as pa
import tensorflow as tf

from data import example_encoding as enc


def _reference(row: int, floats, ints, strings, valid) -> bytes:
    def listed(kind, value, ok):
        return tf.train.Feature(**{kind: {"float_list": tf.train.FloatList,
                                          "int64_list": tf.train.Int64List,
                                          "bytes_list": tf.train.BytesList}[kind](
            value=[value] if ok else [])})

    feature = {"zeta": listed("float_list", floats[row], valid[0][row]),
               "alpha": listed("int64_list", int(ints[row]), valid[1][row]),
               "mid": listed("bytes_list", strings[row], valid[2][row]),
               "nothing": tf.train.Feature()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def test_records_are_protobufs_deterministic_bytes_in_chunks_and_odd_values(monkeypatch):
    monkeypatch.setattr(enc, "CHUNK_ROWS", 64)  # several chunks, as a large block has
    rng = np.random.default_rng(0)
    n = 500
    floats = (rng.normal(size=n) * 1e3).astype(np.float32)
    floats[:3] = [np.nan, np.inf, -0.0]
    ints = rng.integers(-2**63, 2**63 - 1, size=n)
    ints[:4] = [0, -1, 127, 128]
    strings = [("é" * int(rng.integers(1, 300)) + str(i)).encode() for i in range(n)]
    strings[0] = b"x" * 20000  # longer than a chunk's usual width
    valid = [rng.random(n) > 0.2, rng.random(n) > 0.3, rng.random(n) > 0.1]
    columns = [enc.Column("zeta", enc.FLOAT, floats, valid[0]),
               enc.Column("alpha", enc.INT, ints, valid[1]),
               enc.Column("mid", enc.BYTES, pa.array(strings, pa.binary()), valid[2]),
               enc.Column("nothing", enc.ABSENT)]
    records = enc.to_arrow(*enc.serialize(columns, n)).to_pylist()
    assert records == [_reference(r, floats, ints, strings, valid) for r in range(n)]


def test_chunks_shrink_for_long_strings():
    long = enc.Column("text", enc.BYTES, pa.array([b"x" * 100_000]), np.array([True]))
    assert enc.chunk_rows([long]) == enc.CHUNK_BYTES // (100_000 + 32)

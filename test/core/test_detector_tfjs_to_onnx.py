"""The TF.js -> ONNX converter on small hand-made TF.js graph models, checked against numpy.

Each graph is written the way the TF.js converter writes ``model.json`` (GraphDef nodes as JSON,
base64 strings, one weight shard with a manifest, fp16 / uint8 quantised weights), converted,
and run with onnxruntime; the reference results are computed here with plain numpy, following
TensorFlow's definitions of the ops (SAME padding puts the odd row at the end, FloorDiv floors,
ResizeBilinear without corner alignment maps output x to input x * in / out).
"""
from __future__ import annotations

import base64

import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError
from panoptic_mapper.core.segmentation.tfjs_to_onnx import (SUPPORTED_OPS, convert_tfjs_graph,
                                                            read_tfjs_weights)

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


# ---- writing TF.js graph models ---------------------------------------------------------------
def _s(text):
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values):
    return {"list": {"i": [str(v) for v in values]}}


class TfjsModel:
    """Builds ``model.json`` (as a dict) and its single weight shard."""

    def __init__(self):
        self.nodes, self.manifest, self.shard = [], [], b""

    def placeholder(self, name, shape, dtype="DT_FLOAT"):
        self.nodes.append({"name": name, "op": "Placeholder", "attr": {
            "dtype": {"type": dtype},
            "shape": {"shape": {"dim": [{"size": str(d)} for d in shape]}}}})
        return name

    def const(self, name, value, quantise=None):
        """A Const node and its weights; ``quantise`` = "float16" or "uint8" (affine)."""
        value = np.asarray(value)
        entry = {"name": name, "shape": list(value.shape),
                 "dtype": {"f": "float32", "i": "int32", "b": "bool"}[value.dtype.kind]}
        if quantise == "float16":
            data = value.astype(np.float16).tobytes()
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        elif quantise == "uint8":
            low, scale = float(value.min()), float(np.ptp(value)) / 255 or 1.0
            data = np.rint((value - low) / scale).astype(np.uint8).tobytes()
            entry["quantization"] = {"dtype": "uint8", "min": low, "scale": scale}
        else:
            data = value.astype({"f": np.float32, "i": np.int32, "b": np.bool_}[
                value.dtype.kind]).tobytes()
        self.manifest.append(entry)
        self.shard += data
        self.nodes.append({"name": name, "op": "Const", "attr": {
            "dtype": {"type": "DT_FLOAT"}, "value": {"tensor": {"dtype": "DT_FLOAT"}}}})
        return name

    def op(self, name, op, inputs, **attr):
        self.nodes.append({"name": name, "op": op, "input": list(inputs), "attr": attr})
        return name

    def model_json(self, outputs):
        return {"format": "graph-model",
                "signature": {"outputs": {o: {"name": o} for o in outputs}},
                "modelTopology": {"node": self.nodes},
                "weightsManifest": [{"paths": ["group1-shard1of1.bin"],
                                     "weights": self.manifest}]}

    def convert(self, outputs):
        model_json = self.model_json(outputs)
        weights = read_tfjs_weights(model_json["weightsManifest"], lambda path: self.shard)
        return convert_tfjs_graph(model_json, weights), weights

    def run(self, outputs, feeds):
        model, weights = self.convert(outputs)
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        return dict(zip(outputs, session.run(outputs, feeds))), weights


def _conv_attrs(strides=1, padding="SAME", fused=None):
    attr = {"strides": _ints([1, strides, strides, 1]), "padding": _s(padding),
            "data_format": _s("NHWC"), "dilations": _ints([1, 1, 1, 1])}
    if fused:
        attr["fused_ops"] = {"list": {"s": [base64.b64encode(f.encode()).decode()
                                            for f in fused]}}
        attr["num_args"] = {"i": "1"}
    return attr


# ---- numpy references -------------------------------------------------------------------------
def _same_pad(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_nhwc(x, kernel_hw, stride, padding, value=0.0):
    if padding == "VALID":
        return x
    (t, b), (l, r) = (_same_pad(x.shape[1], kernel_hw[0], stride),
                      _same_pad(x.shape[2], kernel_hw[1], stride))
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _windows(x, kh, kw, stride):
    """[N, OH, OW, kh, kw, C] sliding windows of a padded NHWC array."""
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    return np.stack([np.stack([x[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
                               for j in range(ow)], 1) for i in range(oh)], 1)


def np_conv(x, w, stride, padding):
    win = _windows(_pad_nhwc(x, w.shape[:2], stride, padding), *w.shape[:2], stride)
    return np.einsum("nyxhwc,hwco->nyxo", win, w)


def np_depthwise(x, w, stride, padding):
    win = _windows(_pad_nhwc(x, w.shape[:2], stride, padding), *w.shape[:2], stride)
    out = np.einsum("nyxhwc,hwcm->nyxcm", win, w)
    return out.reshape(*out.shape[:3], -1)  # channel c * multiplier + m, as TF


def np_max_pool(x, k, stride):
    win = _windows(_pad_nhwc(x, (k, k), stride, "SAME", -np.inf), k, k, stride)
    return win.max(axis=(3, 4))


def np_resize_bilinear(x, out_h, out_w):
    """TF ResizeBilinear, align_corners=False, half_pixel_centers=False."""
    def axis(size_in, size_out):
        src = np.arange(size_out) * size_in / size_out
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, size_in - 1), src - low
    y0, y1, fy = axis(x.shape[1], out_h)
    x0, x1, fx = axis(x.shape[2], out_w)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + \
        x[:, y0][:, :, x1] * fx[None, None, :, None]
    bottom = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + \
        x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]


# ---- tests ------------------------------------------------------------------------------------
def test_weights_are_dequantised_as_the_manifest_says():
    m = TfjsModel()
    rng = np.random.default_rng(1)
    half, affine = rng.normal(size=(2, 3)), rng.uniform(-2, 3, size=(4,))
    m.const("half", half, "float16")
    m.const("affine", affine, "uint8")
    m.const("ints", np.array([3, -1], np.int32))
    weights = read_tfjs_weights(m.model_json([])["weightsManifest"], lambda path: m.shard)
    assert weights["half"].dtype == np.float32 and weights["ints"].dtype == np.int32
    np.testing.assert_allclose(weights["half"], half, rtol=1e-3)
    np.testing.assert_allclose(weights["affine"], affine, atol=np.ptp(affine) / 255 / 2 + 1e-6)
    assert weights["ints"].tolist() == [3, -1]
    with pytest.raises(DataFormatError, match="shards hold"):
        read_tfjs_weights(m.model_json([])["weightsManifest"], lambda path: m.shard[:-4])


def test_a_conv_backbone_matches_numpy():
    """Fused conv (stride 2, SAME, bias + ReLU), depthwise conv (multiplier 2), hard-swish-like
    arithmetic, a squeeze-excite mean, upsampling, max-pool and concat."""
    rng = np.random.default_rng(0)
    m = TfjsModel()
    x = m.placeholder("images", [1, 7, 6, 3])
    w1, b1 = rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4)
    c1 = m.op("c1", "_FusedConv2D", [x, m.const("w1", w1, "float16"), m.const("b1", b1)],
              **_conv_attrs(2, "SAME", ["BiasAdd", "Relu"]))
    wd = rng.normal(size=(3, 3, 4, 2))
    dw = m.op("dw", "DepthwiseConv2dNative", [c1, m.const("wd", wd, "uint8")],
              **_conv_attrs(1, "SAME"))
    scaled = m.op("scaled", "Mul", [m.const("half", np.float32(0.5)), dw])
    b2 = rng.normal(size=8)
    r6 = m.op("r6", "Relu6", [m.op("biased", "AddV2", [scaled, m.const("b2", b2)])])
    w3, b3 = rng.normal(size=(1, 1, 8, 5)), rng.normal(size=5)
    c3 = m.op("c3", "_FusedConv2D", [r6, m.const("w3", w3), m.const("b3", b3)],
              **_conv_attrs(1, "VALID", ["BiasAdd"]))
    mean = m.op("mean", "Mean", [c3, m.const("axes", np.array([1, 2], np.int32))],
                keep_dims={"b": True})
    excited = m.op("excited", "Mul", [c3, m.op("gate", "Sigmoid", [mean])])
    up = m.op("up", "ResizeBilinear", [excited, m.const("size", np.array([8, 7], np.int32))],
              align_corners={"b": False}, half_pixel_centers={"b": False})
    pool = m.op("pool", "MaxPool", [up], ksize=_ints([1, 3, 3, 1]),
                strides=_ints([1, 1, 1, 1]), padding=_s("SAME"), data_format=_s("NHWC"))
    m.op("out", "ConcatV2", [pool, up, m.const("axis", np.int32(-1))])
    m.op("result", "Identity", ["out"])
    image = rng.uniform(0, 1, (1, 7, 6, 3)).astype(np.float32)
    got, weights = m.run(["result"], {"images": image})

    ref = np.maximum(np_conv(image, weights["w1"], 2, "SAME") + weights["b1"], 0)
    assert ref.shape == (1, 4, 3, 4)  # ceil(7 / 2), ceil(6 / 2): TF SAME sizes
    ref = np_depthwise(ref, weights["wd"], 1, "SAME") * 0.5 + weights["b2"]
    ref = np.clip(ref, 0, 6)
    ref = np_conv(ref, weights["w3"], 1, "VALID") + weights["b3"]
    ref = ref / (1 + np.exp(-ref.mean(axis=(1, 2), keepdims=True)))  # x * sigmoid(mean x)
    up_ref = np_resize_bilinear(ref, 8, 7)
    expected = np.concatenate([np_max_pool(up_ref, 3, 1), up_ref], axis=-1)
    assert got["result"].shape == (1, 8, 7, 10)
    np.testing.assert_allclose(got["result"], expected, rtol=1e-4, atol=1e-4)


def test_a_centernet_style_decoding_tail_matches_numpy():
    """Peak picking (max-pool == value), top-k, index arithmetic, gather, strided slices."""
    rng = np.random.default_rng(3)
    m = TfjsModel()
    heat = m.placeholder("heat", [1, 4, 4, 2])
    pooled = m.op("pooled", "MaxPool", [heat], ksize=_ints([1, 3, 3, 1]),
                  strides=_ints([1, 1, 1, 1]), padding=_s("SAME"), data_format=_s("NHWC"))
    is_peak = m.op("is_peak", "Cast", [m.op("eq", "Equal", [heat, pooled])],
                   SrcT={"type": "DT_BOOL"}, DstT={"type": "DT_FLOAT"})
    peaks = m.op("peaks", "Mul", [heat, is_peak])
    flat = m.op("flat", "Reshape", [peaks, m.const("shape", np.array([1, -1], np.int32))])
    m.op("topk", "TopKV2", [flat, m.const("k", np.int32(3))], sorted={"b": True})
    two, four = m.const("two", np.int32(2)), m.const("four", np.int32(4))
    m.op("cls", "FloorMod", ["topk:1", two])
    pixel = m.op("pixel", "FloorDiv", ["topk:1", two])
    m.op("row", "FloorDiv", [pixel, four])
    col = m.op("col", "FloorMod", [pixel, four])
    m.op("col_f", "Cast", [m.op("col_e", "ExpandDims", [col, m.const("dim", np.int32(-1))])],
         SrcT={"type": "DT_INT32"}, DstT={"type": "DT_FLOAT"})
    values = m.op("values", "Reshape", [heat, m.const("all", np.array([-1], np.int32))])
    index = m.op("index", "Reshape", ["topk:1", m.const("all2", np.array([-1], np.int32))])
    m.op("gathered", "GatherV2", [values, index, m.const("axis0", np.int32(0))],
         batch_dims={"i": "0"})
    # heat[0, 1:3, :, 1]: shrink axes 0 and 3, end_mask on axis 2
    m.op("slice", "StridedSlice", [heat, m.const("begin", np.array([0, 1, 0, 1], np.int32)),
                                   m.const("end", np.array([1, 3, 0, 2], np.int32)),
                                   m.const("steps", np.array([1, 1, 1, 1], np.int32))],
         begin_mask={"i": "0"}, end_mask={"i": "4"}, shrink_axis_mask={"i": "9"},
         new_axis_mask={"i": "0"}, ellipsis_mask={"i": "0"})
    scores = rng.uniform(0, 1, (1, 4, 4, 2)).astype(np.float32)
    outputs = ["topk", "cls", "row", "col_f", "gathered", "slice"]
    got, _ = m.run(outputs, {"heat": scores})

    ref_peaks = scores * (scores == np_max_pool(scores, 3, 1))
    assert (ref_peaks > 0).sum() >= 3  # the top 3 are distinct peaks: no ties
    flat_ref = ref_peaks.reshape(1, -1)
    top = np.argsort(-flat_ref[0])[:3]
    np.testing.assert_allclose(got["topk"], flat_ref[:, top], rtol=1e-6)
    assert got["cls"].tolist() == [(top % 2).tolist()] and got["cls"].dtype == np.int32
    assert got["row"].tolist() == [(top // 2 // 4).tolist()]
    np.testing.assert_array_equal(got["col_f"], (top // 2 % 4).astype(np.float32)[None, :, None])
    np.testing.assert_allclose(got["gathered"], scores.reshape(-1)[top], rtol=1e-6)
    np.testing.assert_array_equal(got["slice"], scores[0, 1:3, :, 1])


def test_floor_division_and_modulo_round_down_like_tensorflow():
    m = TfjsModel()
    ints = m.placeholder("ints", [6], "DT_INT32")
    floats = m.placeholder("floats", [4])
    three, f3 = m.const("three", np.int32(3)), m.const("f3", np.float32(1.5))
    m.op("idiv", "FloorDiv", [ints, three])
    m.op("imod", "FloorMod", [ints, three])
    m.op("fdiv", "FloorDiv", [floats, f3])
    m.op("fmod", "FloorMod", [floats, f3])
    a = np.array([-7, -3, -1, 0, 5, 9], np.int32)
    f = np.array([-2.0, -0.5, 0.7, 4.0], np.float32)
    got, _ = m.run(["idiv", "imod", "fdiv", "fmod"], {"ints": a, "floats": f})
    assert got["idiv"].tolist() == (a // 3).tolist() and got["imod"].tolist() == (a % 3).tolist()
    np.testing.assert_allclose(got["fdiv"], np.floor_divide(f, 1.5))
    np.testing.assert_allclose(got["fmod"], np.mod(f, 1.5), atol=1e-6)


def test_unsupported_ops_are_all_named():
    m = TfjsModel()
    x = m.placeholder("x", [1, 4])
    m.op("y", "Softmax", [m.op("z", "Erf", [x])])
    with pytest.raises(DataFormatError, match="Erf, Softmax"):
        m.convert(["y"])
    assert "Softmax" not in SUPPORTED_OPS and "_FusedConv2D" in SUPPORTED_OPS


def test_bad_graphs_fail_with_the_node_named():
    m = TfjsModel()
    x = m.placeholder("x", [1, 4, 4, 1])
    m.nodes.append({"name": "w", "op": "Const", "attr": {}})  # no weights for it
    m.op("c", "Conv2D", [x, "w"], **_conv_attrs())
    with pytest.raises(DataFormatError, match="w.*Const node without weights"):
        m.convert(["c"])
    m = TfjsModel()
    x = m.placeholder("x", [1, 4, 4, 1])
    m.op("c", "Conv2D", [x, m.placeholder("w", [1, 1, 1, 1])], **_conv_attrs())
    with pytest.raises(DataFormatError, match="filter must be a constant"):
        m.convert(["c"])
    m = TfjsModel()
    m.placeholder("x", [1, 4])
    with pytest.raises(DataFormatError, match="not tensors of the graph"):
        m.convert(["nope"])
    m = TfjsModel()
    m.op("y", "Relu", ["later"])
    m.placeholder("later", [2])
    with pytest.raises(DataFormatError, match="not defined before"):
        m.convert(["y"])

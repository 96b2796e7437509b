"""Graph fusions for the MiniLM models Baton runs: the encoder (all-MiniLM-L6-v2) and the
sentiment model (its first four layers, fine-tuned; models/sentiment).

Each transformer layer's attention core, exported as some twenty small nodes between the Q/K/V
projections and the output projection (reshapes, transposes, scaling, masking, softmax), becomes
one ONNX Runtime node with the three projections inside it: for the encoder, `Attention` (which
quantize_dynamic makes QAttention); for the sentiment model, committed already quantised,
`QAttention` built from its quantised projections. The encoder's erf GELUs (five nodes each, which
ONNX Runtime's own optimiser does not fuse in this export) become one `Gelu` node each. The
arithmetic is the same: the fp32 encoder's outputs agree within 2e-6, and the int8 sentiment
model's logits on the 12,284 TweetEval test tweets are bit for bit those of the committed file.
At one short message per run, the number of nodes is much of the time (evals/RESULTS.md, stop 33).

Used by encoder/quantize.py on the fp32 graph before quantisation, and on its own for the
sentiment model, which is committed already quantised:
    python encoder/fusion.py sentiment IN_ONNX OUT_ONNX     (models/build.sh runs it)
Each fusion checks the pattern it replaces and stops with a message when the graph is not the one
it knows, rather than writing a model that computes something else; and `same_outputs` runs the
graph before and after through ONNX Runtime on a few messages (one padded batch among them) and
stops the build when they disagree.
"""

import sys

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

# Token ids of a few messages ([CLS] ... [SEP], the tokenizer's own), for `same_outputs`.
SAMPLE_MESSAGES = [
    [101, 2129, 2079, 1045, 2131, 1037, 25416, 8630, 102],  # how do i get a refund
    [101, 1045, 2215, 2000, 2831, 2000, 1037, 2529, 102],  # i want to talk to a human
    [101, 7592, 102],  # hello
]


def same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, tolerance: float, what: str,
                 padded_batch: bool = True) -> None:
    """Run both graphs on SAMPLE_MESSAGES, one at a time and (when `padded_batch`) together,
    padded, and stop unless every output agrees within `tolerance` over the real tokens."""
    def session(model):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])

    def feed(rows):
        width = max(len(row) for row in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for index, row in enumerate(rows):
            ids[index, :len(row)] = row
            mask[index, :len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    first, second = session(before), session(after)
    batches = [[row] for row in SAMPLE_MESSAGES] + ([SAMPLE_MESSAGES] if padded_batch else [])
    worst = 0.0
    for rows in batches:
        inputs = feed(rows)
        for a, b in zip(first.run(None, inputs), second.run(None, inputs)):
            if a.ndim == 3:  # [batch, sequence, hidden]: compare the real tokens only
                mask = inputs["attention_mask"][:, :, None]
                a, b = a * mask, b * mask
            worst = max(worst, float(np.abs(a - b).max()))
    if worst > tolerance:
        sys.exit(f"{what}: the fused graph's outputs differ by {worst} (more than {tolerance})")


def links(graph: onnx.GraphProto):
    """Which node produces each value, and which nodes read it."""
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producer, consumers


def drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove the nodes no graph output depends on, then the initializers nothing reads."""
    graph = model.graph
    wanted = {output.name for output in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(output in wanted for output in node.output):
            live.append(node)
            wanted.update(name for name in node.input if name)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    kept = [init for init in graph.initializer if init.name in wanted]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def declare_onnx_runtime_ops(model: onnx.ModelProto) -> None:
    """The fused nodes are ONNX Runtime's own (domain com.microsoft): the model must import it."""
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


def mask_as_int32() -> onnx.NodeProto:
    """The attention mask as the fused attention nodes read it (int32, [batch, sequence])."""
    return onnx.helper.make_node("Cast", ["attention_mask"], ["attention_mask_int32"],
                                 to=onnx.TensorProto.INT32, name="attention_mask_int32")


def finish_attention_fusion(model: onnx.ModelProto, mask: onnx.NodeProto) -> None:
    """After the fused nodes are in: the mask's cast first, the operator domain declared, the old
    cores (now read by nothing) dropped, and a stop if any of their operators is left."""
    model.graph.node.insert(0, mask)
    declare_onnx_runtime_ops(model)
    drop_dead_nodes(model)
    left = [node.op_type for node in model.graph.node if node.op_type in ("Softmax", "Transpose", "IsNaN")]
    if left:
        sys.exit(f"attention fusion left {left} behind")


def bias_add(graph: onnx.GraphProto, suffix: str) -> list[onnx.NodeProto]:
    """The Add nodes that add a bias whose initializer name ends with `suffix`, in graph order."""
    return [node for node in graph.node
            if node.op_type == "Add" and any(name.endswith(suffix) for name in node.input)]


def fuse_attention(model: onnx.ModelProto) -> None:
    """Each layer's Q, K and V projections and its attention core become one com.microsoft
    Attention node: the layer's input, the three weight matrices side by side ([384, 1152]), the
    three biases, and the attention mask as int32; its output feeds the output projection.
    Quantised (quantize_dynamic with "Attention"), it becomes QAttention: the input quantised once
    as before, one integer product for the three projections with the same per-column weight
    scales, so the int8 results are bit for bit those of MultiHeadAttention after three separate
    projections, one node and two products fewer per layer. The exported core scales Q and K by
    head_size ** -0.25 each (Attention: the scores by 1 / sqrt(head_size)), adds a mask of -3.4e38
    (Attention: -10000; either is exactly zero after softmax) and zeroes rows that are all masked
    (none are: [CLS] is always attended). The old nodes, and the mask arithmetic they shared, are
    then unused and dropped."""
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer, consumers = links(graph)
    queries = bias_add(graph, "attention.self.query.bias")
    keys = bias_add(graph, "attention.self.key.bias")
    values = bias_add(graph, "attention.self.value.bias")
    outputs = bias_add(graph, "attention.output.dense.bias")
    if not len(queries) == len(keys) == len(values) == len(outputs) == 6:
        sys.exit(f"expected 6 attention layers, found {len(queries)} / {len(keys)} / {len(values)} / {len(outputs)}")
    mask = mask_as_int32()
    fused = []
    for layer, (query, key, value, output_add) in enumerate(zip(queries, keys, values, outputs)):
        # The head size: the last entry of the shape Q is reshaped to ([batch, sequence, -1, 32]).
        (reshape,) = [n for n in consumers[query.output[0]] if n.op_type == "Reshape"]
        head_size = int(constants[producer[reshape.input[1]].input[-1]][0])
        # The scale, applied to Q and K alike after the head split.
        (transpose,) = consumers[reshape.output[0]]
        (scale_mul,) = consumers[transpose.output[0]]
        scale = float(next(constants[name] for name in scale_mul.input if name in constants))
        if scale_mul.op_type != "Mul" or abs(scale - head_size ** -0.25) > 1e-6:
            sys.exit(f"layer {layer}: attention scale {scale} is not head_size ** -0.25 (head size {head_size})")
        # Each projection: MatMul(layer input, weight) then Add(bias), all three on the same input.
        weights, biases, inputs = [], [], set()
        for add in (query, key, value):
            (matmul,) = [producer[name] for name in add.input if name in producer]
            (bias,) = [name for name in add.input if name in constants]
            if matmul.op_type != "MatMul" or matmul.input[1] not in constants:
                sys.exit(f"layer {layer}: {add.name} does not follow a MatMul by a weight")
            inputs.add(matmul.input[0])
            weights.append(constants[matmul.input[1]])
            biases.append(constants[bias])
        if len(inputs) != 1:
            sys.exit(f"layer {layer}: Q, K and V do not read the same input")
        (projection,) = [producer[name] for name in output_add.input if name in producer]
        if projection.op_type != "MatMul":
            sys.exit(f"layer {layer}: expected the output projection MatMul, found {projection.op_type}")
        attended = f"attention_{layer}"
        graph.initializer.extend([
            numpy_helper.from_array(np.concatenate(weights, axis=1), f"{attended}_qkv_weight"),
            numpy_helper.from_array(np.concatenate(biases), f"{attended}_qkv_bias"),
        ])
        fused.append((projection, onnx.helper.make_node(
            "Attention",
            [inputs.pop(), f"{attended}_qkv_weight", f"{attended}_qkv_bias", mask.output[0]],
            [attended], domain="com.microsoft", num_heads=384 // head_size, name=attended)))
        projection.input[0] = attended
    for projection, attention in fused:
        graph.node.insert(list(graph.node).index(projection), attention)
    finish_attention_fusion(model, mask)


def fuse_gelu(model: onnx.ModelProto) -> None:
    """x * 0.5 * (1 + erf(x / sqrt(2))), five nodes, becomes one com.microsoft Gelu (the same
    exact erf form)."""
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer, consumers = links(graph)

    def constant_beside(node: onnx.NodeProto, operand: str) -> float:
        (name,) = [name for name in node.input if name != operand]
        return float(constants[name])

    erfs = [node for node in graph.node if node.op_type == "Erf"]
    if len(erfs) != 6:
        sys.exit(f"expected 6 GELUs (one per layer), found {len(erfs)} Erf nodes")
    for erf in erfs:
        divide = producer[erf.input[0]]
        x = divide.input[0]
        (plus_one,) = consumers[erf.output[0]]
        (halve,) = consumers[plus_one.output[0]]
        (times_x,) = consumers[halve.output[0]]
        if not (divide.op_type == "Div" and abs(constant_beside(divide, x) - 2 ** 0.5) < 1e-6
                and plus_one.op_type == "Add" and constant_beside(plus_one, erf.output[0]) == 1.0
                and halve.op_type == "Mul" and constant_beside(halve, plus_one.output[0]) == 0.5
                and times_x.op_type == "Mul" and set(times_x.input) == {x, halve.output[0]}):
            sys.exit(f"{erf.name}: not the erf GELU pattern")
        position = list(graph.node).index(divide)
        for node in (divide, erf, plus_one, halve, times_x):
            graph.node.remove(node)
        graph.node.insert(position, onnx.helper.make_node(
            "Gelu", [x], [times_x.output[0]], domain="com.microsoft", name=f"{erf.name}_gelu"))
    declare_onnx_runtime_ops(model)
    drop_dead_nodes(model)


def quantised_projection(add: onnx.NodeProto, producer: dict, constants: dict) -> dict:
    """What quantize_dynamic made of `x @ W + b`: Add(b, Mul(Cast(MatMulInteger(x_q, W_q, x_zp,
    W_zp)), Mul(x_scale, W_scale))). Returns the quantised input's three names and the weight's
    int8 values, per-column scales and zero points, and the bias."""
    (bias,) = [name for name in add.input if name in constants]
    (rescale,) = [producer[name] for name in add.input if name in producer]
    (product,) = [name for name in rescale.input if producer[name].op_type == "Cast"]
    (scales,) = [name for name in rescale.input if name != product]
    integer = producer[producer[product].input[0]]
    scale_product = producer[scales]
    if integer.op_type != "MatMulInteger" or scale_product.op_type != "Mul":
        sys.exit(f"{add.name}: not a dynamically quantised projection")
    input_q, weight, input_zero_point, weight_zero_point = integer.input
    (weight_scale,) = [name for name in scale_product.input if name in constants]
    (input_scale,) = [name for name in scale_product.input if name not in constants]
    return {
        "input": (input_q, input_scale, input_zero_point),
        "weight": constants[weight],
        "weight_scale": constants[weight_scale],
        "weight_zero_point": constants[weight_zero_point],
        "bias": constants[bias],
    }


def fuse_sentiment_attention(model: onnx.ModelProto) -> None:
    """The sentiment model's attention cores (torch's TorchScript export, already quantised):
    per layer `/layers.N/{q,k,v}/Add` feed reshapes, a Q.K^T MatMul, a Mul by 1/sqrt(head size),
    the Add of a -10000 mask (as the fused node's), Softmax, the MatMul with V, and a transpose
    and `/layers.N/Reshape_3` back to [batch, sequence, 384], which the output projection's
    quantiser reads. The three quantised projections and the core become one QAttention node
    whose output is that Reshape's: the same quantised input, the three int8 weights side by
    side with their per-column scales and zero points, so the logits are bit for bit the same
    (checked on all 12,284 TweetEval test tweets)."""
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer, consumers = links(graph)
    by_name = {node.name: node for node in graph.node}
    layers = sorted({node.name.split("/")[1] for node in graph.node if node.name.startswith("/layers.")})
    if not layers:
        sys.exit("no /layers.N/ nodes: not the sentiment model's export")
    mask = mask_as_int32()
    fused = []
    for layer in layers:
        try:
            query, key, value = (by_name[f"/{layer}/{part}/Add"] for part in "qkv")
            merged = by_name[f"/{layer}/Reshape_3"]
        except KeyError as missing:
            sys.exit(f"{layer}: no node {missing}: not the sentiment model's export")
        # Check the core it replaces: Q reshaped to [.., 12, 32]; scores scaled by 1/sqrt(32);
        # a -10000 mask added; one Softmax.
        (reshape,) = [n for n in consumers[query.output[0]] if n.op_type == "Reshape"]
        (transpose,) = consumers[reshape.output[0]]
        (scores,) = consumers[transpose.output[0]]
        (scale_mul,) = consumers[scores.output[0]]
        (mask_add,) = consumers[scale_mul.output[0]]
        (softmax,) = consumers[mask_add.output[0]]
        scale = float(next(constants[name] for name in scale_mul.input if name in constants))
        # The mask: (1 - attention_mask) * -10000, unsqueezed to [batch, 1, 1, sequence].
        masking = producer[next(name for name in mask_add.input if name != scale_mul.output[0])]
        while masking.op_type == "Unsqueeze":
            masking = producer[masking.input[0]]
        filter_value = [float(constants[name]) for name in masking.input if name in constants]
        heads = int(next(constants[name] for name in producer[reshape.input[1]].input
                         if name in constants).reshape(-1)[0])
        if not (scores.op_type == "MatMul" and scale_mul.op_type == "Mul" and mask_add.op_type == "Add"
                and softmax.op_type == "Softmax" and abs(scale - (384 // heads) ** -0.5) < 1e-6
                and masking.op_type == "Mul" and filter_value == [-10000.0]):
            sys.exit(f"{layer}: the attention core is not the one this fusion knows")
        parts = [quantised_projection(add, producer, constants) for add in (query, key, value)]
        if len({part["input"] for part in parts}) != 1:
            sys.exit(f"{layer}: Q, K and V do not read the same quantised input")
        input_q, input_scale, input_zero_point = parts[0]["input"]
        packed = f"{layer}_qkv"
        for field in ("weight", "weight_scale", "weight_zero_point", "bias"):
            graph.initializer.append(numpy_helper.from_array(
                np.concatenate([part[field] for part in parts], axis=-1), f"{packed}_{field}"))
        fused.append((merged, onnx.helper.make_node(
            "QAttention",
            [input_q, f"{packed}_weight", f"{packed}_bias", input_scale, f"{packed}_weight_scale",
             mask.output[0], input_zero_point, f"{packed}_weight_zero_point"],
            [merged.output[0]], domain="com.microsoft", num_heads=heads, name=f"/{layer}/attention")))
    for merged, attention in fused:
        position = list(graph.node).index(merged)
        graph.node.remove(merged)
        graph.node.insert(position, attention)
    finish_attention_fusion(model, mask)


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] != "sentiment":
        sys.exit("usage: python fusion.py sentiment IN_ONNX OUT_ONNX")
    model = onnx.load(sys.argv[2])
    committed = onnx.load(sys.argv[2])
    fuse_sentiment_attention(model)
    onnx.checker.check_model(model)
    # Bit for bit here; a small margin for CPUs whose kernels round differently. Batch 1 only,
    # as it runs: the dynamic quantisation makes a padded batch's scores depend on the padding.
    same_outputs(committed, model, 1e-5, "sentiment", padded_batch=False)
    onnx.save(model, sys.argv[3])
    ops = [node.op_type for node in model.graph.node]
    print(f"sentiment: {sys.argv[3]}: {ops.count('QAttention')} QAttention, {len(ops)} nodes")


if __name__ == "__main__":
    main()

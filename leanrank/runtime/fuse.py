"""Fuse each BERT self-attention block of an exported graph into one ONNX Runtime ``Attention``
node (packed QKV projection, scaling, padding mask, softmax and context in one kernel).

ORT's own transformer optimizer only recognises the attention patterns of the old TorchScript
exporter; the dynamo exporter (the only correct one with transformers 5) emits a pattern it
misses, so a third of the run time goes to Transposes, mask Where/IsNaN and separate MatMuls.
Here the block is found by the exporter's module metadata instead of by pattern: every node
recorded under ``<layer>.attention.self`` is replaced, whatever attention implementation was
traced. ``quantize_dynamic`` then turns the node into ``QAttention`` (int8 QKV projection).

>>> fused, n = fuse_attention(onnx.load("model.onnx"), head_size=32)
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

_SELF = re.compile(r"^(?:m\.)?(.*\.layer\.\d+\.attention\.self)$")


def _module_path(node) -> str | None:
    """Innermost ``...layer.N.attention.self`` module on the node's exporter namespace."""
    for prop in node.metadata_props:
        if prop.key == "namespace":
            for part in reversed(prop.value.split("/")):
                name = part.split(":")[0].strip()
                hit = _SELF.match(name)
                if hit:
                    return hit.group(1)
    return None


def _projection(nodes, consumers, inits, which: str):
    """(input tensor, weight [in, out], bias [out]) of the query/key/value Linear of a block."""
    for n in nodes:
        if n.op_type == "MatMul" and any(f".attention.self.{which}" in p.value for p in n.metadata_props
                                          if p.key == "namespace"):
            if n.input[1] not in inits:
                return None
            adds = [c for c in consumers[n.output[0]] if c.op_type == "Add"]
            if len(adds) != 1:
                return None
            bias_name = next((i for i in adds[0].input if i in inits), None)
            if bias_name is None:
                return None
            return n.input[0], inits[n.input[1]], inits[bias_name]
    return None


def fuse_attention(model, head_size: int):
    """Fuse ``model`` in place and return ``(model, n_fused)``; blocks that do not match (shared
    inputs, missing bias...) stay as they were, and nothing is changed when none match. Dead nodes and unused initializers are removed afterwards. The scores are scaled
    by 1/sqrt(``head_size``) as in BERT (the traced constants are not read: SDPA splits the
    scale between Q and K); callers check parity against the unfused graph."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    blocks: dict[str, list] = defaultdict(list)
    for node in graph.node:
        path = _module_path(node)
        if path is not None:
            blocks[path].append(node)
    consumers = defaultdict(list)
    for node in graph.node:
        for i in node.input:
            consumers[i].append(node)
    graph_outputs = {o.name for o in graph.output}
    mask_input = next((i.name for i in graph.input if i.name == "attention_mask"), None)
    if mask_input is None or not blocks:
        return model, 0

    replacements: dict = {}
    candidates = set(blocks)
    while True:   # blocks share shape nodes: an output is internal if another fused block reads it
        union = {id(n) for p in candidates for n in blocks[p]}
        replacements = {}
        for path in sorted(candidates):
            nodes = blocks[path]
            outs = {o for n in nodes for o in n.output
                    if o in graph_outputs or any(id(c) not in union for c in consumers[o])}
            q, k, v = (_projection(nodes, consumers, inits, w) for w in ("query", "key", "value"))
            if len(outs) != 1 or None in (q, k, v) or len({q[0], k[0], v[0]}) != 1:
                continue
            if q[1].shape[1] % head_size or q[1].shape != k[1].shape:
                continue
            replacements[path] = (nodes, outs.pop(), q, k, v)
        if set(replacements) == candidates:
            break
        candidates = set(replacements)
    if not replacements:
        return model, 0
    removed = {id(n) for nodes, *_ in replacements.values() for n in nodes}
    mask32 = "leanrank_attention_mask_int32"
    new_nodes = [helper.make_node("Cast", [mask_input], [mask32], to=onnx.TensorProto.INT32,
                                  name="leanrank_mask_cast")]
    fused_at, new_inits = {}, []
    for path, (nodes, out, q, k, v) in replacements.items():
        prefix = path.replace(".", "_")
        weight = np.concatenate([q[1], k[1], v[1]], axis=1).astype(np.float32)
        bias = np.concatenate([q[2], k[2], v[2]]).astype(np.float32)
        new_inits += [numpy_helper.from_array(weight, f"{prefix}_qkv_weight"),
                      numpy_helper.from_array(bias, f"{prefix}_qkv_bias")]
        attrs = {"num_heads": int(q[1].shape[1] // head_size)}
        if v[1].shape[1] != q[1].shape[1]:
            attrs["qkv_hidden_sizes"] = [q[1].shape[1], k[1].shape[1], v[1].shape[1]]
        fused = helper.make_node("Attention", [q[0], f"{prefix}_qkv_weight", f"{prefix}_qkv_bias", mask32],
                                 [out], name=f"{prefix}_Attention", domain="com.microsoft", **attrs)
        fused.metadata_props.add(key="namespace", value=f"{path}: fused/{path}.query: Linear")
        fused_at[id(nodes[-1])] = fused
    for node in graph.node:
        if id(node) in fused_at:
            new_nodes.append(fused_at[id(node)])
        elif id(node) not in removed:
            new_nodes.append(node)
    # each fused node goes where its block's last node was; _live re-sorts what needs it
    try:
        ordered = _live(new_nodes, graph_outputs)
    except ValueError:                 # an unexpected graph shape: leave the graph as it was
        return model, 0
    del graph.node[:]
    graph.node.extend(ordered)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in [*graph.initializer, *new_inits] if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model, len(replacements)


def _live(nodes, outputs: set[str]):
    """Nodes that (transitively) feed a graph output, topologically sorted (stable: a node keeps
    its place unless an input it reads is produced later, e.g. by a fused node)."""
    producer = {o: n for n in nodes for o in n.output}
    needed, stack, live = set(), list(outputs), set()
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        n = producer.get(t)
        if n is not None and id(n) not in live:
            live.add(id(n))
            stack.extend(i for i in n.input if i)
    kept = [n for n in nodes if id(n) in live]
    done: set[str] = set()
    ordered, emitted = [], set()
    while len(ordered) < len(kept):
        progress = False
        for n in kept:
            if id(n) not in emitted and all(i in done or i not in producer for i in n.input if i):
                ordered.append(n)
                emitted.add(id(n))
                done.update(n.output)
                progress = True
        if not progress:
            raise ValueError("attention fusion produced a cycle")
    return ordered

"""Profile one decode step of the exact int8 target against the memory-bandwidth floor.

    python scripts/profile_step.py [--threads N] [--context 900] [--rows 1,17]

Times each kernel of a forward over T rows (the ops `hvd_layer` runs, called one by one, all
layers) after a prefill of `--context` tokens of a real source file, and the bytes each must
read (int8 weights, float16 KV cache). The floor is those bytes at this machine's measured
read bandwidth (a float32 sum over 512 MB, same thread count).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def bandwidth(threads: int) -> float:
    torch.set_num_threads(threads)
    x = torch.ones(128 * 1024 * 1024)  # 512 MB
    x.sum()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    return x.numel() * 4 / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--context", type=int, default=900)
    ap.add_argument("--rows", default="1,17")
    a = ap.parse_args()
    from hvd.targets import loader as models
    from hvd.machine import cpu_name
    from hvd.targets.exact import ExactLlamaTarget
    from hvd.targets.native import ptr

    bw = bandwidth(a.threads)
    lm, tok = models.load(None)
    t = ExactLlamaTarget(lm, threads=a.threads)
    import inspect, json as _json  # noqa: E401  a long real text to fill the context
    ids = tok.encode(inspect.getsource(_json.decoder) + inspect.getsource(_json.encoder))[: a.context]
    t.prefill(ids)
    s, lib = t.shape, t.lib
    print(f"CPU: {cpu_name()}; threads {a.threads}; read bandwidth {bw / 1e9:.1f} GB/s; context {len(ids)}")
    kv_bytes = 2 * s.layers * s.kv_heads * s.head_dim * 2 * len(ids)
    w_bytes = sum(w.q.numel() for l in t._layers for w in (l.qkv, l.o, l.gate_up, l.down))
    h_bytes = t._head.q.numel()
    for T in (int(r) for r in a.rows.split(",")):
        x = torch.randn(T, s.hidden) * 0.1
        pos = torch.arange(len(ids), len(ids) + T, dtype=torch.int32)
        base = pos + 1
        path, off = torch.zeros(1, dtype=torch.int32), torch.zeros(T + 1, dtype=torch.int32)
        inter = t._inter
        hq, hs = torch.empty(T, max(s.hidden, inter), dtype=torch.int16), torch.empty(T)
        qkv = torch.empty(T, (s.heads + 2 * s.kv_heads) * s.head_dim)
        q, att = torch.empty(T, s.heads, s.head_dim), torch.empty(T, s.heads * s.head_dim)
        gu = torch.empty(T, 2 * inter)
        t._ensure(len(ids) + T)
        cap = t._v.shape[2]
        ops = {
            "norms + quantize": lambda l, w: (lib.hvd_rmsnorm_quant(ptr(x), T, s.hidden, ptr(w.ln_attn), s.eps, None, ptr(hq), ptr(hs)),
                                              lib.hvd_rmsnorm_quant(ptr(x), T, s.hidden, ptr(w.ln_mlp), s.eps, None, ptr(hq), ptr(hs)),
                                              lib.hvd_quantize(ptr(att), T, att.shape[1], ptr(hq), ptr(hs))),
            "linears (weights)": lambda l, w: [lib.hvd_linear(ptr(hq), ptr(hs), T, m.q.shape[1] * 16, ptr(m.q), ptr(m.scale),
                                                              m.out_features, ptr(y), 0, m.group)
                                               for m, y in ((w.qkv, qkv), (w.o, att), (w.gate_up, gu), (w.down, x))],
            "rope + KV write": lambda l, w: lib.hvd_rope_store(ptr(qkv), T, s.heads, s.kv_heads, s.head_dim, None, None, None,
                                                               s.eps, ptr(pos), ptr(t._rope[w.kind][0]),
                                                               ptr(t._rope[w.kind][1]), ptr(pos), ptr(q), ptr(t._k[l]),
                                                               ptr(t._v[l]), cap),
            "attention (KV)": lambda l, w: lib.hvd_attention(ptr(q), T, s.heads, s.kv_heads, s.head_dim, ptr(t._k[l]), ptr(t._v[l]),
                                                             cap, ptr(base), ptr(path), ptr(off), ptr(pos), w.spec.window,
                                                             w.spec.scale, ptr(att)),
            "silu": lambda l, w: lib.hvd_act_mul_quant(ptr(gu), T, inter, w.spec.act, ptr(hq), ptr(hs)),
        }
        hq.zero_()
        res = {}
        for name, op in ops.items():
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for l, w in enumerate(t._layers):
                    op(l, w)
                times.append(time.perf_counter() - t0)
            res[name] = statistics.median(times)
        times = []
        h = torch.randn(T, s.hidden)
        for _ in range(5):
            t0 = time.perf_counter()
            t._logits(h)
            times.append(time.perf_counter() - t0)
        res["LM head"] = statistics.median(times)
        from hvd.types import Draft

        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            t.verify(ids[-1], Draft.chain(ids[: T - 1]))
            t.commit([])
            times.append(time.perf_counter() - t0)
        step = statistics.median(times)
        res["framework (rest of the step)"] = max(step - sum(res.values()), 0.0)
        floor = (w_bytes + h_bytes + kv_bytes) / bw
        print(f"\nrows {T}: step {step * 1e3:.1f} ms; bandwidth floor {floor * 1e3:.1f} ms "
              f"(weights {w_bytes / 1e6:.0f} MB + head {h_bytes / 1e6:.0f} MB + KV {kv_bytes / 1e6:.0f} MB)")
        print("| part | ms | share | floor ms |")
        print("|---|---|---|---|")
        floors = {"linears (weights)": w_bytes / bw, "LM head": h_bytes / bw, "attention (KV)": kv_bytes / bw}
        for name, sec in res.items():
            f = floors.get(name)
            print(f"| {name} | {sec * 1e3:.2f} | {sec / step:.0%} | {'' if f is None else f'{f * 1e3:.2f}'} |")


if __name__ == "__main__":
    main()

"""Peak memory and step time of a GPT train step (Adam): context length and width, activation
recompute, LoRA against full fine-tuning, and PyTorch (torch.utils.checkpoint) side by side; and
of the attention alone (forward + backward of causal multi-head attention from packed q, k, v)
against context 128...2048: the blocked core, the tiled one and PyTorch's
scaled_dot_product_attention on the CPU.

    python -m benchmarks.memory                  # the whole table (a few minutes on 2 cores)
    python -m benchmarks.memory --sections attention   # the attention cores only
    python -m benchmarks.memory --quick          # smaller sizes, a smoke run
    python -m benchmarks.memory minigrad|torch   # peak RSS of 3 config-M steps (benchmarks.run)

Every measurement runs in a fresh process, so no allocator cache or high-water mark carries over.
Memory: with MINIGRAD_MALLOC_TUNING=0 (glibc then returns freed blocks, so resident memory
follows what is alive), after one warm step (Adam's state exists) the kernel's high-water mark
is reset (/proc/self/clear_refs) and one more step runs: "step MiB" is that peak above the
resident memory before it, the activations and temporaries of one step. "grad+opt MiB" counts
the gradient buffers and optimizer state exactly (from the arrays). The attention rows fix
glibc's mmap threshold (MMAP_THRESHOLD) for both libraries and add, for minigrad_lm, the peak
that tracemalloc counts over one more step ("traced"). Time: one process per group
(the variants of one size: recompute none/blocks/attention, or full/LoRA), with the normal
allocator settings, the variants taking turns step by step (benchmarks.harness), so the drift of
a shared machine slows them alike; medians. Compare ratios within a group.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

M = {"vocab": 65, "n_layer": 6, "n_head": 8, "d_model": 256, "batch": 16}
GPT2_SMALL = {"vocab": 50257, "n_layer": 12, "n_head": 12, "d_model": 768, "batch": 2,
              "context": 128, "context_length": 1024}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1])


def peak_rss_mib() -> float:
    """The kernel's high-water mark (VmHWM), not getrusage: ru_maxrss survives exec."""
    return _status_kib("VmHWM") / 1024


def _reset_peak() -> float:
    """Reset VmHWM to the current resident size; returns that size in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") / 1024


# ---- one measurement (a child process) ---------------------------------------------------------

def _batch(vocab: int, batch: int, context: int):
    ids = np.random.default_rng(0).integers(0, vocab, (batch, context + 1))
    return ids[:, :-1], ids[:, 1:]


def _minigrad(spec: dict):
    """(step function, gradient + optimizer bytes function, extras) for minigrad_lm."""
    import minigrad_lm as mg
    from minigrad_lm.models import GPT, GPTConfig
    from minigrad_lm.nn.lora import add_lora, merge_lora
    from minigrad_lm.optim import Adam

    mg.manual_seed(0)
    cfg = GPTConfig(vocab_size=spec["vocab"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                    d_model=spec["d_model"],
                    context_length=spec.get("context_length", spec["context"]),
                    recompute=spec["recompute"])
    model = GPT(cfg)
    if spec.get("lora_rank"):
        add_lora(model, ["qkv"], spec["lora_rank"], 2.0 * spec["lora_rank"])
    opt = Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = _batch(spec["vocab"], spec["batch"], spec["context"])

    def step():
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def state_bytes():
        arrays = opt.grad_buffers() + [a for st in opt.state for a in st.values()]
        arrays += [g._scratch for g in opt.groups if g._scratch is not None]
        return sum(a.nbytes for a in arrays)

    def extras():
        if not spec.get("lora_rank"):
            return {}
        model.eval()
        with mg.no_grad():
            ids = x[:1, :32]
            unmerged = model(ids).numpy()
            merge_lora(model)
            merged = model(ids).numpy()
        return {"merged_logits_max_diff": float(np.abs(merged - unmerged).max())}
    return step, state_bytes, extras


def _torch(spec: dict):
    import torch

    import minigrad_lm as mg
    from minigrad_lm.models import GPT, GPTConfig

    from .torch_gpt import from_minigrad
    mg.manual_seed(0)
    cfg = GPTConfig(vocab_size=spec["vocab"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                    d_model=spec["d_model"],
                    context_length=spec.get("context_length", spec["context"]))
    tm = from_minigrad(GPT(cfg))
    tm.recompute_blocks = spec["recompute"] == "blocks"
    opt = torch.optim.Adam(tm.parameters(), lr=1e-4)
    x, y = (torch.tensor(a) for a in _batch(spec["vocab"], spec["batch"], spec["context"]))

    def step():
        loss = tm.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def state_bytes():
        grads = sum(p.grad.nbytes for p in tm.parameters() if p.grad is not None)
        state = sum(v.nbytes for st in opt.state.values() for v in st.values()
                    if torch.is_tensor(v) and v.ndim)
        return grads + state
    return step, state_bytes, lambda: {}


ATTENTION = {"batch": 2, "n_head": 8, "d_model": 256}  # config M's heads, a long-context batch


def _attention(spec: dict):
    """Forward + backward of causal attention on packed (B, T, 3C) projections: minigrad_lm's
    blocked or tiled core, or torch's scaled_dot_product_attention (its CPU flash kernel)."""
    b, t, c, h = spec["batch"], spec["context"], spec["d_model"], spec["n_head"]
    qkv = np.random.default_rng(0).standard_normal((b, t, 3 * c)).astype(np.float32)
    if spec["impl"] == "torch":
        import torch
        x = torch.tensor(qkv, requires_grad=True)

        def step():
            q, k, v = x.view(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            y.transpose(1, 2).reshape(b, t, c).sum().backward()
            x.grad = None
        return step, lambda: 0, lambda: {}
    import minigrad_lm as mg
    from minigrad_lm.nn import functional as F
    x = mg.tensor(qkv, requires_grad=True)
    tiled = spec["core"] == "tiled"

    def step():
        F.multi_head_attention(x, h, True, tiled=tiled).sum().backward()
        x.grad = None
    return step, lambda: 0, lambda: {}


def _build(spec: dict):
    if "core" in spec:
        return _attention(spec)
    return (_torch if spec["impl"] == "torch" else _minigrad)(spec)


def measure(job: dict):
    """Run in a child: {"memory": spec} -> that spec's memory; {"time": [spec, ...]} -> their
    median step times, the variants taking turns."""
    if "memory" in job:
        step, state_bytes, extras = _build(job["memory"])
        step()  # warm: Adam's state, the flat buffers, BLAS threads
        before = _reset_peak()
        step()
        return {"step_mib": peak_rss_mib() - before, "grad_opt_mib": state_bytes() / 2**20,
                **extras(), **_traced_step_mib(job["memory"], step)}
    from .harness import interleaved_medians
    steps = {i: _build(spec)[0] for i, spec in enumerate(job["time"])}
    medians = interleaved_medians(steps, repeats=job.get("steps", 3), block=1, warmup=2)
    return [1e3 * medians[i] for i in range(len(steps))]


# Attention rows: every allocation above this many bytes is its own mmap, returned to the OS when
# freed (a fixed threshold turns off glibc's adaptive one, which would keep the first step's freed
# blocks resident and hide the second step's peak), so the resident peak follows the live bytes
# of minigrad_lm and PyTorch alike.
MMAP_THRESHOLD = 1 << 16


def _traced_step_mib(spec: dict, step) -> dict:
    """minigrad_lm's attention rows: the peak of the bytes NumPy allocates during one more step,
    as tracemalloc counts them (the attention's own allocations, no allocator in between)."""
    if "core" not in spec or spec["impl"] != "minigrad":
        return {}
    import tracemalloc
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"traced_mib": peak / 2**20}


def _child(job: dict, tuned: bool = True):
    env = dict(os.environ)
    if not tuned:
        env["MINIGRAD_MALLOC_TUNING"] = "0"
    if "core" in job.get("memory", {}):
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--one", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"benchmarks.memory child {job} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_group(specs: list[dict]) -> list[dict]:
    """Memory of each variant (a process each), then their times (one process, in turns)."""
    rows = [{**spec, **_child({"memory": spec}, tuned=False)} for spec in specs]
    for row, ms in zip(rows, _child({"time": specs})):
        row["step_ms"] = ms
    return rows


# ---- the table -------------------------------------------------------------------------------

def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


SECTIONS = ("context", "width", "torch", "lora", "attention")
ATTENTION_CONTEXTS = (128, 256, 512, 1024, 2048)


def groups(quick: bool, sections=SECTIONS, attention_contexts=ATTENTION_CONTEXTS):
    """(section, [variant specs timed together]) of every measurement."""
    contexts, widths = ((64, 256), (128, 256)) if quick else ((128, 512), (128, 512))
    modes = ("none", "blocks", "attention")
    mg_ = {**M, "impl": "minigrad"}
    if "context" in sections:
        for context in contexts:
            yield "context", [{**mg_, "context": context, "recompute": r} for r in modes]
    if "width" in sections:
        for width in widths:
            yield "width", [{**mg_, "d_model": width, "context": 128, "recompute": r}
                            for r in modes[:2]]
    if "torch" in sections and _has_torch():
        yield "torch", [{**M, "impl": "torch", "context": contexts[-1], "recompute": r}
                        for r in modes[:2]]
    if "lora" in sections:
        small = GPT2_SMALL if not quick else {**GPT2_SMALL, "n_layer": 2}
        yield "lora", [{**small, "impl": "minigrad", "recompute": "none", "lora_rank": r}
                       for r in (0, 8)]
    if "attention" in sections:
        cores = [("minigrad", "blocked"), ("minigrad", "tiled")]
        cores += [("torch", "sdpa")] if _has_torch() else []
        for context in attention_contexts[:3] if quick else attention_contexts:
            yield "attention", [{**ATTENTION, "impl": impl, "core": core, "context": context}
                                for impl, core in cores]


def _line(row: dict) -> str:
    impl = row["impl"]
    if "core" in row:
        traced = f" (traced {row['traced_mib']:7.1f})" if "traced_mib" in row else " " * 18
        return (f"attention {impl:8s} {row['core']:7s} T{row['context']:<5d} B{row['batch']} "
                f"H{row['n_head']} d{row['d_model']} | step {row['step_mib']:7.1f} MiB{traced}"
                f" | {row['step_ms']:8.1f} ms")
    name = (f"{impl:8s} L{row['n_layer']} d{row['d_model']:<4d} T{row['context']:<4d} "
            f"B{row['batch']:<3d} recompute {row['recompute']:9s}"
            + (f" lora r{row['lora_rank']}" if row.get("lora_rank") else
               " full     " if "lora_rank" in row else ""))
    return (f"{name} | step {row['step_mib']:7.1f} MiB | grad+opt {row['grad_opt_mib']:7.1f} "
            f"MiB | {row['step_ms']:8.1f} ms")


def _ratios(rows: list[dict]) -> list[str]:
    def find(section, **kw):
        return next(r for s, r in rows if s == section and all(r.get(k) == v
                                                               for k, v in kw.items()))
    out = []
    sections = {s for s, _ in rows}
    target = max((r["context"] for s, r in rows if s in ("context", "torch")), default=0)
    for mode in ("blocks", "attention") if "context" in sections else ():
        base = find("context", context=target, recompute="none")
        r = find("context", context=target, recompute=mode)
        out.append(f"recompute {mode} at T{target}: step memory x{r['step_mib'] / base['step_mib']:.2f}"
                   f", step time x{r['step_ms'] / base['step_ms']:.2f}")
    if "torch" in sections:
        t0, t1 = find("torch", recompute="none"), find("torch", recompute="blocks")
        out.append(f"torch.utils.checkpoint blocks at T{target}: step memory "
                   f"x{t1['step_mib'] / t0['step_mib']:.2f}, step time "
                   f"x{t1['step_ms'] / t0['step_ms']:.2f}")
    if "attention" in sections:
        for context in sorted({r["context"] for s, r in rows if s == "attention"}):
            base = find("attention", context=context, core="blocked")
            parts = [f"{r['core']} memory x{r['step_mib'] / max(base['step_mib'], 1e-3):.2f} "
                     f"time x{r['step_ms'] / base['step_ms']:.2f}"
                     for s, r in rows if s == "attention" and r["context"] == context
                     and r is not base]
            out.append(f"attention T{context} against the blocked core: " + ", ".join(parts))
    if "lora" not in sections:
        return out
    full, lora = find("lora", lora_rank=0), find("lora", lora_rank=8)
    out.append(f"LoRA r8 (qkv) vs full fine-tuning: grad+opt memory "
               f"{lora['grad_opt_mib'] / full['grad_opt_mib']:.2%}, step memory "
               f"x{lora['step_mib'] / full['step_mib']:.2f}, step time "
               f"x{lora['step_ms'] / full['step_ms']:.2f}; merged logits max diff "
               f"{lora['merged_logits_max_diff']:.1e}")
    return out


def table(quick: bool, out_path: str | None, sections=SECTIONS,
          attention_contexts=ATTENTION_CONTEXTS) -> None:
    rows = []
    for section, specs in groups(quick, sections, attention_contexts):
        for row in run_group(specs):
            rows.append((section, row))
            print(_line(row), flush=True)
    summary = _ratios(rows)
    print("\n".join(summary))
    if out_path:
        with open(out_path, "w") as f:
            json.dump({"rows": [r for _, r in rows], "summary": summary}, f, indent=1)


def legacy(impl: str) -> None:
    """Peak RSS of 3 config-M steps of one implementation (the row benchmarks.run prints).

    Two steps of a tiny model run first, so that code each library loads once (PyTorch's
    kernels, the Numba-compiled loops of minigrad_lm's CPU kernels) is not counted as the
    step's memory."""
    from minigrad_lm.models import GPT, GPTConfig

    from .train_step import CONFIGS, minigrad_step_seconds, torch_step_seconds
    cfg, batch = CONFIGS["M"]
    tiny = GPTConfig(vocab_size=cfg.vocab_size, context_length=8, n_layer=1, n_head=2,
                     d_model=16)
    if impl == "minigrad":
        minigrad_step_seconds(tiny, 2, steps=2)
        baseline = peak_rss_mib()
        minigrad_step_seconds(cfg, batch, steps=3)
    else:
        torch_step_seconds(GPT(tiny), tiny, 2, steps=2)
        model = GPT(cfg)
        baseline = peak_rss_mib()
        torch_step_seconds(model, cfg, batch, steps=3)
    peak = peak_rss_mib()
    print(json.dumps({"impl": impl, "peak_rss_mib": peak, "step_growth_mib": peak - baseline}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("impl", nargs="?", choices=["minigrad", "torch"],
                   help="only the config-M peak RSS of one implementation")
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--contexts", default=",".join(map(str, ATTENTION_CONTEXTS)),
                   help="comma-separated contexts of the attention section")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one measurement
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
    elif args.impl:
        legacy(args.impl)
    else:
        table(args.quick, args.out, args.sections.split(","),
              tuple(int(c) for c in args.contexts.split(",")))


if __name__ == "__main__":
    main()

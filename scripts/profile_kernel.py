#!/usr/bin/env python3
"""One launch of our block-sparse attention op on a fixed problem, for a profiler (ncu / nsys) to capture.

usage: profile_kernel.py --lib build-gpu/lib/libsparge_ops.so [--op attention|predict|spas] [--n 32768] [--d 128]
                         [--density 1.0] [--causal] [--path auto|portable|sm90] [--dtype bf16|fp16]
                         [--quant none|int8|int8_fp8] [--heavy-rows 0.0] [--reps 1] [--ab-env NAME] [--vs-cudnn]
                         [--kernels] [--check-mask]
--op attention (default): sparge::block_sparse_attention on a random block mask (quantized: the op quantizes q
and k (and v for FP8) in its own kernels before the attention kernel); --op predict: sparge::predict_block_mask
(stage-1 prediction: statistics, score GEMM, selection; CDF threshold 0.9); --op spas: sparge::spas_attention
(the prediction and the attention kernel in one call, CDF threshold 0.9, --quant as given).
--check-mask: the op validates the mask lists in every call (its default; a check kernel and a synchronization);
without it the calls pass check_mask=False (as bench_flex.py times them).
--heavy-rows F: that fraction of the mask rows (at random) lists every block (unbalanced rows; e.g. --ab-env
SPARGE_TILE_ORDER times the Hopper kernel's heavy-rows-first order (1) against the natural one (0)).
--ab-env NAME: an A/B timing of the same call with the environment variable NAME (read by the op at every
call, e.g. SPARGE_SM90_LAZY) set to 1 and to 0, interleaved over 15 rounds of --reps calls; prints the medians
and whether the two settings' outputs are bit-identical.
--vs-cudnn: the op and cuDNN SDPA (dense, same q, k, v) interleaved over 15 rounds of --reps calls each; prints both
medians and their ratio (clock drift between the two cancels; older builds of the op work: quant is passed only when
set).
--kernels: the op's kernels one by one (torch.profiler over --reps calls): device time per call of each kernel
(quantization, tile order, attention) and the span of one call from its first kernel's start to its last one's end.
Warm-up launches run before the profiled ones (ncu: --launch-skip them). The NVTX range "profiled" holds every
kernel of the op call (on the Hopper path also the one-CTA tile-order kernel).
"""
import argparse
import os

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--op", default="attention", choices=["attention", "predict", "spas"])
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--density", type=float, default=1.0)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--path", default="auto")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--quant", default="none", choices=["none", "int8", "int8_fp8"])
    ap.add_argument("--heavy-rows", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--ab-env", default=None)
    ap.add_argument("--vs-cudnn", action="store_true")
    ap.add_argument("--kernels", action="store_true")
    ap.add_argument("--check-mask", action="store_true")
    args = ap.parse_args()
    os.environ["SPARGE_KERNEL_PATH"] = args.path
    torch.ops.load_library(args.lib)
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    h = 16 if args.d == 128 else 32
    b = max(1, 32768 // args.n)
    n = args.n
    q, k, v = (torch.randn(b, h, n, args.d, device="cuda", dtype=dt) for _ in range(3))
    nqb, nkb = (n + 127) // 128, (n + 63) // 64
    gen = torch.Generator(device="cuda").manual_seed(0)
    keep = torch.rand(b, h, nqb, nkb, generator=gen, device="cuda") < args.density
    if args.heavy_rows > 0:
        keep |= torch.rand(b, h, nqb, 1, generator=gen, device="cuda") < args.heavy_rows
    if args.causal:
        qi = torch.arange(nqb, device="cuda").view(-1, 1)
        kj = torch.arange(nkb, device="cuda").view(1, -1)
        keep &= kj * 64 <= qi * 128 + 127
    counts = keep.sum(-1, dtype=torch.int32)
    order = torch.where(keep, torch.arange(nkb, device="cuda"), nkb).sort(-1).values
    indices = torch.where(order == nkb, -1, order).to(torch.int32).contiguous()
    extra = {} if args.quant == "none" else {"quant": args.quant}
    if "check_mask" in str(torch.ops.sparge.block_sparse_attention.default._schema):
        extra["check_mask"] = args.check_mask  # (older builds: no such argument, always checked)
    run = lambda: torch.ops.sparge.block_sparse_attention(q, k, v, counts, indices, 128, 64,  # noqa: E731
                                                           is_causal=args.causal, **extra)
    if args.op == "predict":
        run = lambda: torch.ops.sparge.predict_block_mask(q, k, is_causal=args.causal,  # noqa: E731
                                                           cdfthreshd=0.9)
    if args.op == "spas":
        run = lambda: torch.ops.sparge.spas_attention(q, k, v, is_causal=args.causal, cdfthreshd=0.9,  # noqa: E731
                                                      quant=args.quant)
    for _ in range(args.warmup):
        run()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    def interleaved(variants):
        """Median ms per call of each (name, setup, fn) over 15 rounds, the variants alternating within a round."""
        times = {name: [] for name, _, _ in variants}
        for _ in range(15):
            for name, setup, fn in variants:
                setup()
                fn()
                start.record()
                for _ in range(args.reps):
                    fn()
                stop.record()
                stop.synchronize()
                times[name].append(start.elapsed_time(stop) / args.reps)
        return {k: sorted(v)[len(v) // 2] for k, v in times.items()}

    if args.vs_cudnn:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def cudnn():
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=args.causal)

        med = interleaved([("ours", lambda: None, run), ("cudnn", lambda: None, cudnn)])
        print(f"vs cuDNN path={args.path} quant={args.quant} N={n} D={args.d} density={args.density} "
              f"causal={args.causal}: ours {med['ours']:.3f} ms, cuDNN {med['cudnn']:.3f} ms, cuDNN/ours = "
              f"{med['cudnn'] / med['ours']:.3f}")
        return
    if args.ab_env:
        med = interleaved([(val, lambda val=val: os.environ.__setitem__(args.ab_env, val), run) for val in ("1", "0")])
        print(f"A/B {args.ab_env} op={args.op} path={args.path} quant={args.quant} N={n} density={args.density} "
              f"heavy_rows={args.heavy_rows} "
              f"causal={args.causal}: 1 -> {med['1']:.3f} ms, 0 -> {med['0']:.3f} ms, ratio 0/1 = "
              f"{med['0'] / med['1']:.3f}")
        outs = {}
        for val in ("1", "0"):
            os.environ[args.ab_env] = val
            res = run()
            outs[val] = res if isinstance(res, (tuple, list)) else (res,)
        same = all(torch.equal(a, b) for a, b in zip(outs["1"], outs["0"]))
        print(f"  outputs with {args.ab_env}=1 and =0 bit-identical: {same}")
        return
    if args.kernels:
        kernel_table(run, args)
        return
    torch.cuda.nvtx.range_push("profiled")  # ncu --nvtx --nvtx-include profiled/ captures only these launches
    start.record()
    for _ in range(args.reps):
        run()
    stop.record()
    torch.cuda.nvtx.range_pop()
    stop.synchronize()
    ms = start.elapsed_time(stop) / args.reps
    if args.op in ("predict", "spas"):
        print(f"{args.op} quant={args.quant} N={n} B={b} D={args.d} causal={args.causal}: {ms:.4f} ms")
        return
    flops = 4.0 * b * h * n * n * args.d * counts.sum().item() / (b * h * nqb * nkb) / (2 if args.causal else 1)
    print(f"path={args.path} quant={args.quant} N={n} D={args.d} density={args.density} causal={args.causal}: "
          f"{ms:.3f} ms "
          f"{flops / ms / 1e9:.1f} TFLOPS (computed blocks)")


def kernel_table(run, args):
    """Prints each kernel's device time per op call and the mean span of a call (first kernel start to last end)."""
    from torch.profiler import ProfilerActivity, profile

    reps = max(args.reps, 5)
    spans = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            torch.cuda.synchronize()
            run()
            torch.cuda.synchronize()
    per_kernel, first, last = {}, None, None
    events = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda e: e.time_range.start)
    # Calls are separated by synchronizations: a gap of more than 50 us between kernels starts a new call.
    for e in events:
        t0, t1 = e.time_range.start, e.time_range.end
        if last is not None and t0 - last > 50:
            spans.append(last - first)
            first = None
        first = t0 if first is None else first
        last = t1 if last is None else max(last, t1)
        per_kernel[e.name] = per_kernel.get(e.name, 0.0) + (t1 - t0)
    if first is not None:
        spans.append(last - first)
    print(f"kernels path={args.path} quant={args.quant} N={args.n} density={args.density} causal={args.causal} "
          f"heavy_rows={args.heavy_rows}: {reps} calls, span per call {sum(spans) / len(spans):.1f} us "
          f"({len(spans)} spans)")
    for name, us in sorted(per_kernel.items(), key=lambda kv: -kv[1]):
        print(f"  {us / reps:9.1f} us  {name[:110]}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Block-sparse attention side by side on one GPU, same inputs, same masks, same run:
our kernel (torch.ops.sparge.block_sparse_attention, loaded from the built libsparge_ops.so; on an sm_90 GPU the
default path is the Hopper kernel and the portable mma.sync kernel is timed next to it as sparge_bf16_portable, and
likewise sparge_fp8_portable / sparge_int8_portable for the quantized methods),
FlexAttention
(torch.compile'd flex_attention with a BlockMask built from the same key-block lists) and dense torch SDPA with the
cuDNN and flash backends.

Protocol: bf16, HND, B*N = 32768 tokens, H = 32 (D = 64) or 16 (D = 128), random normal q, k, v. Masks: for each
(batch, head, 128-row query block) every 128-key block is kept with probability `density` (the diagonal block always
kept, so no row is empty); the same lists drive both kernels (our 128x64 mask lists each 128-key block as two
64-key blocks). Causal: the causal block pattern intersected with the random mask, element mask inside diagonal
blocks for both. Each sparse output is validated against FlexAttention's before timing; the op's own check of
the lists runs once per mask (the validation call) and the timed calls pass check_mask=False (no check kernel, no
synchronization per call; FlexAttention does not validate its BlockMask either). Times: CUDA events, median
of 20 runs after 3 warm-ups. Dense-equivalent TFLOPS = 4 B H N^2 D / t (halved when causal).
Quantized (D = 128, N = 32768: every density non-causal, density 1 causal): the same op with quant="int8_fp8"
(method sparge_fp8: INT8 Q.K^T, FP8 e4m3 P.V, SageAttention2-style) and quant="int8" (method sparge_int8: INT8
Q.K^T, bf16 P.V); their times include the quantization of q and k (INT8, smoothed K) and, for FP8, of V (per-channel
e4m3, transposed), all on the GPU inside the op. Validated against FlexAttention with rel L2 < 5e-2 (INT8) / 1e-1
(FP8: e4m3 P and V); a failed validation skips its timing (the summary shows n/a).

usage: bench_flex.py --lib build-gpu/lib/libsparge_ops.so --json OUT.json [--quick | --summary-only]
"""
import argparse
import json
import os
import sys
import time

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

FLEX_BLOCK = 128


def median_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def sdpa(q, k, v, causal, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    with sdpa_kernel([be]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


def on_path(path, fn):
    """fn with the op forced onto one kernel path (SPARGE_KERNEL_PATH is read at every call)."""
    def run():
        os.environ["SPARGE_KERNEL_PATH"] = path
        try:
            return fn()
        finally:
            del os.environ["SPARGE_KERNEL_PATH"]
    return run


def random_block_lists(b, h, n, density, causal, gen):
    """(counts (B,H,NQB) int32, indices (B,H,NQB,NKB) int32 ascending, -1 padded) over 128x128 blocks."""
    nb = (n + FLEX_BLOCK - 1) // FLEX_BLOCK
    keep = torch.rand(b, h, nb, nb, generator=gen, device="cuda") < density
    eye = torch.eye(nb, dtype=torch.bool, device="cuda")
    keep |= eye
    if causal:
        keep &= torch.ones(nb, nb, dtype=torch.bool, device="cuda").tril()
    counts = keep.sum(-1, dtype=torch.int32)
    order = torch.where(keep, torch.arange(nb, device="cuda"), nb).sort(-1).values
    indices = torch.where(order == nb, -1, order).to(torch.int32)
    return keep, counts, indices


def flex_mask(keep, n, causal):
    """FlexAttention BlockMask: non-diagonal kept blocks are full; diagonal blocks partial with the causal mask_mod."""
    b, h, nb, _ = keep.shape
    if causal:
        diag = torch.eye(nb, dtype=torch.bool, device=keep.device)
        full, partial = keep & ~diag, keep & diag
    else:
        full, partial = keep, torch.zeros_like(keep)

    def lists(m):
        cnt = m.sum(-1, dtype=torch.int32)
        idx = torch.where(m, torch.arange(nb, device=m.device), nb).sort(-1).values
        return cnt, torch.where(idx == nb, 0, idx).to(torch.int32)

    pc, pi = lists(partial)
    fc, fi = lists(full)
    mask_mod = (lambda b_, h_, qi, ki: qi >= ki) if causal else None
    return BlockMask.from_kv_blocks(pc, pi, fc, fi, BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod, seq_lengths=(n, n))


def to_ours(counts, indices):
    """128x128 lists -> our 128x64 lists: key block j becomes 2j, 2j+1 (still ascending)."""
    b, h, nqb, nb = indices.shape
    idx = torch.stack([2 * indices, 2 * indices + 1], -1).view(b, h, nqb, 2 * nb)
    idx = torch.where(idx < 0, -1, idx).to(torch.int32)
    # Padding (-1, -1) pairs came from -1 entries: keep the valid ones first (they already are).
    return (2 * counts).to(torch.int32), idx.contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--summary-only", action="store_true", help="only the shapes summary.json reads (D=128, N=32768)")
    args = ap.parse_args()
    torch.ops.load_library(args.lib)
    flex = torch.compile(flex_attention, dynamic=False)
    gen = torch.Generator(device="cuda").manual_seed(0)
    hopper = torch.cuda.get_device_capability(0) == (9, 0)
    dens = [1.0, 0.5, 0.25, 0.1]
    shapes = [(128, 32768, False), (128, 8192, False), (64, 32768, False), (64, 8192, False), (128, 32768, True)]
    if args.quick:
        shapes = shapes[:1]
    elif args.summary_only:
        shapes = [s for s in shapes if s[0] == 128 and s[1] == 32768]
    rows = []
    for d, n, causal in shapes:
        h = 16 if d == 128 else 32
        b = max(1, 32768 // n)
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4.0 * b * h * n * n * d / (2.0 if causal else 1.0)
        tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
        dense = {be: median_ms(lambda: sdpa(q, k, v, causal, be)) for be in ("cudnn", "flash")}
        for be, ms in dense.items():
            rows.append(dict(method=be, head_dim=d, seq=n, batch=b, heads=h, causal=causal, density=1.0, ms=ms,
                             tflops=tf(ms)))
        t0 = time.time()
        for density in dens:
            keep, counts, indices = random_block_lists(b, h, n, density, causal, gen)
            bm = flex_mask(keep, n, causal)
            oc, oi = to_ours(counts, indices)
            run_flex = lambda: flex(q, k, v, block_mask=bm)  # noqa: E731
            # Timed without the op's per-call mask validation (check_mask=False: no check kernel, no
            # synchronization; FlexAttention does not validate its BlockMask either): the lists are validated
            # once, by the first call below.
            run_ours = lambda check=False: torch.ops.sparge.block_sparse_attention(  # noqa: E731
                q, k, v, oc, oi, 128, 64, is_causal=causal, check_mask=check)[0]
            ref = run_flex()
            ours = run_ours(True)
            err = ((ours.float() - ref.float()).norm() / ref.float().norm()).item()
            if not err < 2e-2:
                print(f"VALIDATION FAILED d={d} n={n} causal={causal} density={density}: rel L2 {err:.3g}")
                sys.exit(1)
            listed = (counts.sum().item() * FLEX_BLOCK * FLEX_BLOCK) / (b * h * n * n)
            runs = [("flex", run_flex, err), ("sparge_bf16", run_ours, err)]
            if hopper:  # the default (auto) runs the Hopper kernel here; time the portable one next to it
                run_portable = on_path("portable", run_ours)
                err_p = ((run_portable().float() - ref.float()).norm() / ref.float().norm()).item()
                if not err_p < 2e-2:
                    print(f"VALIDATION FAILED (portable) d={d} n={n} causal={causal} density={density}: {err_p:.3g}")
                    sys.exit(1)
                runs.append(("sparge_bf16_portable", run_portable, err_p))
            if d == 128 and n == 32768 and (not causal or density == 1.0):
                for method, quant, bound in (("sparge_fp8", "int8_fp8", 1e-1), ("sparge_int8", "int8", 5e-2)):
                    run_q = (lambda quant=quant: torch.ops.sparge.block_sparse_attention(
                        q, k, v, oc, oi, 128, 64, is_causal=causal, quant=quant, check_mask=False)[0])
                    variants = [(method, run_q)]
                    if hopper:  # the quantized Hopper kernel by default; the portable one next to it
                        variants.append((method + "_portable", on_path("portable", run_q)))
                    for name, fn in variants:
                        err_q = ((fn().float() - ref.float()).norm() / ref.float().norm()).item()
                        if err_q < bound:
                            runs.append((name, fn, err_q))
                        else:
                            print(f"VALIDATION FAILED ({name}, not timed) d={d} n={n} causal={causal} "
                                  f"density={density}: rel L2 {err_q:.3g}", flush=True)
            for method, fn, err in runs:
                ms = median_ms(fn)
                rows.append(dict(method=method, head_dim=d, seq=n, batch=b, heads=h, causal=causal, density=density,
                                 listed_fraction=listed, ms=ms, tflops=tf(ms), rel_l2_vs_flex=err))
                print(f"{method:20s} D={d:3d} N={n:6d} causal={int(causal)} density={density:4.2f} "
                      f"{ms:8.3f} ms {tf(ms):7.1f} TFLOPS (vs flex rel L2 {err:.2e})", flush=True)
        print(f"# shape D={d} N={n} causal={causal}: {time.time() - t0:.1f} s (incl. compile)", flush=True)
    meta = dict(torch=torch.__version__, gpu=torch.cuda.get_device_name(0), protocol=__doc__.split("usage")[0].strip())
    with open(args.json, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()

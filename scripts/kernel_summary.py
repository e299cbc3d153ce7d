#!/usr/bin/env python3
"""Builds results/kernels/<gpu>/summary.json and summary.md from one GPU check's outputs.

Inputs (from scripts/gpu_check.sh): flex.json (bench_flex.py: ours vs FlexAttention vs SDPA, one process) and
predict.json (bench_predict: prediction time vs cuDNN, one process), env.json (provenance).
Each ratio is taken from a single run (numerator and denominator measured in the same process on the same inputs).
Ratios whose kernel does not exist yet are null, with the reason.

usage: kernel_summary.py OUTDIR  (reads OUTDIR/{flex,predict,env}.json, writes OUTDIR/summary.{json,md})
"""
import json
import os
import sys

TARGETS = {
    "bf16_dense_vs_cudnn": 0.5, "quant_dense_vs_cudnn": 0.7,
    "bf16_sparse_vs_flex_d50": 0.75, "bf16_sparse_vs_flex_d25": 0.75, "bf16_sparse_vs_flex_d10": 0.75,
    "quant_sparse_vs_flex_d50": 1.0, "quant_sparse_vs_flex_d25": 1.0, "quant_sparse_vs_flex_d10": 1.0,
    "causal_quant_dense_vs_cudnn": None,
    "predict_overhead_n8k": 0.04, "predict_overhead_n32k": 0.01, "predict_overhead_n128k": None,
}
# Issue 8's targets for the Hopper kernel (the default path on an sm_90 GPU): same keys, higher bars.
TARGETS_HOPPER = {
    "bf16_dense_vs_cudnn": 1.0, "quant_dense_vs_cudnn": 1.45, "causal_quant_dense_vs_cudnn": 1.4,
    "bf16_sparse_vs_flex_d50": 1.4, "bf16_sparse_vs_flex_d25": 1.4, "bf16_sparse_vs_flex_d10": 1.4,
    "quant_sparse_vs_flex_d50": 2.0, "quant_sparse_vs_flex_d25": 2.0, "quant_sparse_vs_flex_d10": 1.7,
    "predict_overhead_n32k": 0.01,
}
NO_QUANT = ("no sparge_fp8 row in flex.json (INT8 + FP8 kernel not run, or its validation failed: see "
            "bench_flex.log)")


def pick(rows, **kw):
    hits = [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
    return hits[0] if hits else None


def main():
    out = sys.argv[1]
    flex = json.load(open(os.path.join(out, "flex.json")))["rows"]
    # A run without bench_predict (a kernel-only rerun) leaves the prediction ratios null, with a note.
    predict_path = os.path.join(out, "predict.json")
    predict = json.load(open(predict_path)) if os.path.exists(predict_path) else []
    env = json.load(open(os.path.join(out, "env.json")))
    mma_path = os.path.join(out, "mma.json")
    mma = json.load(open(mma_path)) if os.path.exists(mma_path) else []
    ratios, notes = {}, {}
    base = dict(head_dim=128, seq=32768, causal=False)
    cudnn = pick(flex, method="cudnn", **base)
    ours1 = pick(flex, method="sparge_bf16", density=1.0, **base)
    ratios["bf16_dense_vs_cudnn"] = cudnn["ms"] / ours1["ms"] if cudnn and ours1 else None
    for tag, dens in (("d50", 0.5), ("d25", 0.25), ("d10", 0.1)):
        f = pick(flex, method="flex", density=dens, **base)
        o = pick(flex, method="sparge_bf16", density=dens, **base)
        ratios[f"bf16_sparse_vs_flex_{tag}"] = f["ms"] / o["ms"] if f and o else None
        oq = pick(flex, method="sparge_fp8", density=dens, **base)
        ratios[f"quant_sparse_vs_flex_{tag}"] = f["ms"] / oq["ms"] if f and oq else None
    # Quantized: INT8 Q.K^T with FP8 P.V (QuantMode::kInt8Fp8), time including the quantization of q, k and v.
    oq1 = pick(flex, method="sparge_fp8", density=1.0, **base)
    ratios["quant_dense_vs_cudnn"] = cudnn["ms"] / oq1["ms"] if cudnn and oq1 else None
    ccq = pick(flex, method="cudnn", head_dim=128, seq=32768, causal=True)
    ocq = pick(flex, method="sparge_fp8", head_dim=128, seq=32768, causal=True, density=1.0)
    ratios["causal_quant_dense_vs_cudnn"] = ccq["ms"] / ocq["ms"] if ccq and ocq else None
    for key in ("quant_dense_vs_cudnn", "causal_quant_dense_vs_cudnn", "quant_sparse_vs_flex_d50",
                "quant_sparse_vs_flex_d25", "quant_sparse_vs_flex_d10"):
        if ratios[key] is None:
            notes[key] = NO_QUANT
    for tag, n in (("n8k", 8192), ("n32k", 32768), ("n128k", 131072)):
        p = next((r for r in predict if r["seq"] == n), None)
        ratios[f"predict_overhead_{tag}"] = p["overhead"] if p else None
        if not p:
            notes[f"predict_overhead_{tag}"] = "no bench_predict row for this N in this run (predict.json)"
    # Extra context (not targets): the causal bf16 dense ratio and the quantization-fused prediction overhead.
    cc = pick(flex, method="cudnn", head_dim=128, seq=32768, causal=True)
    oc = pick(flex, method="sparge_bf16", head_dim=128, seq=32768, causal=True, density=1.0)
    extra = {"causal_bf16_dense_vs_cudnn": cc["ms"] / oc["ms"] if cc and oc else None}
    # On an sm_90 GPU sparge_bf16 is the Hopper kernel; the portable mma.sync kernel ran next to it.
    hopper = pick(flex, method="sparge_bf16_portable") is not None
    if hopper:
        for kind, method, causal_den in (("bf16", "sparge_bf16_portable", cc), ("quant", "sparge_fp8_portable", ccq)):
            op = pick(flex, method=method, density=1.0, **base)
            extra[f"portable_{kind}_dense_vs_cudnn"] = cudnn["ms"] / op["ms"] if cudnn and op else None
            for tag, dens in (("d50", 0.5), ("d25", 0.25), ("d10", 0.1)):
                f = pick(flex, method="flex", density=dens, **base)
                o = pick(flex, method=method, density=dens, **base)
                extra[f"portable_{kind}_sparse_vs_flex_{tag}"] = f["ms"] / o["ms"] if f and o else None
            ocp = pick(flex, method=method, head_dim=128, seq=32768, causal=True, density=1.0)
            extra[f"portable_causal_{kind}_dense_vs_cudnn"] = \
                causal_den["ms"] / ocp["ms"] if causal_den and ocp else None
    # The INT8-only variant (QuantMode::kInt8: bf16 P.V) on the same masks.
    for tag, dens in (("dense", 1.0), ("d50", 0.5), ("d25", 0.25), ("d10", 0.1)):
        den = cudnn if dens == 1.0 else pick(flex, method="flex", density=dens, **base)
        o8 = pick(flex, method="sparge_int8", density=dens, **base)
        extra[f"int8_bf16pv_{tag}_vs_{'cudnn' if dens == 1.0 else 'flex'}"] = \
            den["ms"] / o8["ms"] if den and o8 else None
    for r in predict:
        extra[f"predict_with_int8_overhead_n{r['seq'] // 1024}k"] = r["overhead_quant"]
        if "overhead_graph" in r:
            extra[f"predict_gpu_only_overhead_n{r['seq'] // 1024}k (CUDA graph replay)"] = r["overhead_graph"]

    def status(k, v, targets=TARGETS):
        t = targets.get(k)
        if v is None or t is None:
            return None
        return "met" if ((v <= t) if k.startswith("predict") else (v >= t)) else "missed"

    summary = dict(
        provenance=env,
        definition="ratio = baseline time / our time (higher is better) for *_vs_*; predict_overhead = prediction "
                   "time / cuDNN dense time (lower is better). D=128, N=32768, non-causal, bf16, H=16, B=1 unless named.",
        kernel_path="the Hopper (sm90) kernel, every precision (the portable kernel's ratios are under extra, "
                    "portable_*)" if hopper else "the portable kernel",
        ratios=ratios, targets=TARGETS, status={k: status(k, v) for k, v in ratios.items()}, notes=notes,
        targets_hopper=TARGETS_HOPPER if hopper else None,
        status_hopper={k: status(k, v, TARGETS_HOPPER) for k, v in ratios.items()} if hopper else None,
        extra=extra, mma_peak=mma)
    json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
    def bound(k, t):
        return "-" if t is None else ("<= " if k.startswith("predict") else ">= ") + str(t)

    lines = [f"Kernel: {summary['kernel_path']}.", "",
             "| ratio | measured | floor (issue 3) | status | Hopper target (issue 8) | status |",
             "|---|---|---|---|---|---|"]
    for k, v in ratios.items():
        th = TARGETS_HOPPER.get(k) if hopper else None
        lines.append(f"| {k} | {'n/a: ' + notes[k] if v is None else f'{v:.3f}'} | {bound(k, TARGETS.get(k))} | "
                     f"{status(k, v) or '-'} | {bound(k, th)} | "
                     f"{(status(k, v, TARGETS_HOPPER) if hopper else None) or '-'} |")
    lines += ["", "| extra | measured |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in extra.items() if v is not None]
    if mma:
        lines += ["", "### Peak of the mma.sync instructions on this GPU (bench_mma)", "",
                  "| instruction | T(FL)OPS |", "|---|---|"] + \
                 [f"| {r['instruction']} | {r['tera_ops_per_s']:.0f} |" for r in mma]
    lines += ["", "### Dense and block-sparse TFLOPS (same run)", "",
              "| method | D | N | causal | density | ms | TFLOPS |", "|---|---|---|---|---|---|---|"]
    for r in flex:
        lines.append(f"| {r['method']} | {r['head_dim']} | {r['seq']} | {r['causal']} | {r['density']} | "
                     f"{r['ms']:.3f} | {r['tflops']:.0f} |")
    lines += ["", "### Prediction overhead (same run as its cuDNN baseline)", "",
              "| N | B | cuDNN ms | predict ms | predict+INT8 ms | predict ms (graph) | overhead | overhead+INT8 | "
              "overhead (graph) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in predict:
        lines.append(f"| {r['seq']} | {r['batch']} | {r['cudnn_ms']:.3f} | {r['predict_ms']:.3f} | "
                     f"{r['predict_quant_ms']:.3f} | {r.get('predict_graph_ms', float('nan')):.3f} | {r['overhead']:.4f} | "
                     f"{r['overhead_quant']:.4f} | {r.get('overhead_graph', float('nan')):.4f} |")
    open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

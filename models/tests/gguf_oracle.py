"""Test oracle for the GGUF reader: writes a GGUF file with the reference `gguf` package (metadata of every value
type, tensors of every ggml type we read) and a safetensors file with the float32 values the `gguf` package
dequantizes them to.

    python gguf_oracle.py OUT.gguf OUT_REF.safetensors SEED
"""
import sys

import gguf
import numpy as np
from safetensors.numpy import save_file

Q = gguf.GGMLQuantizationType
# Byte offsets of the float16 scale fields inside one block; random bytes there could be inf/NaN.
F16_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
              Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}


def random_blocks(rng, qtype, rows, cols):
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off:off + 2] = rng.normal(0, 0.05, size=n_blocks).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, cols // block * nbytes)


def main(path, ref_path, seed):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 250)
    w.add_int8("test.i8", -7)
    w.add_uint16("test.u16", 65000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.25)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "héllo wörld")
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40) - 5)
    w.add_float64("test.f64", 1.0 / 3.0)
    w.add_array("test.arr_str", ["a", "", "ünï"])
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_f32", [0.5, -1.5])
    w.add_array("test.arr_nested", [[1, 2], [3]])
    refs = {}
    rows, cols = 3, 512
    for qtype in F16_FIELDS:
        raw = random_blocks(rng, qtype, rows, cols)
        name = "t." + qtype.name
        w.add_tensor(name, raw, raw_dtype=qtype)
        refs[name] = gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(rows, cols)
    plain = {"t.F32": np.float32, "t.F16": np.float16, "t.F64": np.float64, "t.I8": np.int8,
             "t.I16": np.int16, "t.I32": np.int32}
    for name, dt in plain.items():
        v = (rng.normal(size=(2, 3, 5)) * (1 if np.issubdtype(dt, np.floating) else 40)).astype(dt)
        w.add_tensor(name, v)
        refs[name] = v.astype(np.float32)
    bf = rng.normal(size=(4, 8)).astype(np.float32)
    bf_raw = (bf.view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("t.BF16", bf_raw, raw_dtype=Q.BF16)
    refs["t.BF16"] = (bf_raw.astype(np.uint32) << 16).view(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(refs, ref_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

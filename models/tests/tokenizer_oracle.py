"""Reference ids for test_tokenizer.cpp from the Hugging Face `tokenizers` library (a test oracle; scripts/setup.sh
installs it, with `gguf`, into .venv).

    tokenizer_oracle.py smollm2 MODEL.gguf CASES.json OUT.json
        SmolLM2's tokenizer as its tokenizer.json defines it (BPE, pre_tokenizer Sequence[Digits(individual_digits),
        ByteLevel]), built from the GGUF's vocabulary and merges read by the `gguf` package.
    tokenizer_oracle.py train {llama3|gpt2} CORPUS CASES.json OUTDIR
        Trains a small byte-level BPE on CORPUS with the Llama-3 split regex (+ ByteLevel, ignore_merges, a
        <|begin_of_text|> template, tokenizer_config.json with the Llama-3 chat template) or GPT-2's ByteLevel
        regex (merges saved as "a b" strings, as GPT-2 era files have them); writes OUTDIR/tokenizer.json and,
        for llama3 when the `gguf` package is there, the same vocabulary as llama.cpp stores it in
        OUTDIR/tokenizer.gguf.

    tokenizer_oracle.py sentencepiece MODEL.model CASES.json OUT.json
        The Python sentencepiece package's ids (optional: not installed by setup).

OUT.json / OUTDIR/oracle.json: {"ids": [...] (add_special_tokens=False), "ids_special": [...] (True),
"pieces": [...] (the pre-tokenizer's pieces as raw text)} for each text of CASES.json ("texts": [{"text": ...}]).
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def byte_decoder():
    """Inverse of GPT-2's byte-to-unicode table: maps a ByteLevel piece back to its raw bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def run_cases(tok, cases_path, out_path):
    texts = [c["text"] for c in json.load(open(cases_path, encoding="utf-8"))["texts"]]
    dec = byte_decoder()
    pieces = [[bytes(dec[ch] for ch in p).decode("utf-8") for p, _ in tok.pre_tokenizer.pre_tokenize_str(t)]
              for t in texts]
    out = {"ids": [tok.encode(t, add_special_tokens=False).ids for t in texts],
           "ids_special": [tok.encode(t, add_special_tokens=True).ids for t in texts],
           "pieces": pieces}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


def smollm2(gguf_path, cases_path, out_path):
    from gguf import GGUFReader
    r = GGUFReader(gguf_path)

    def strings(key):
        field = r.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    run_cases(tok, cases_path, out_path)


def write_llama3_gguf(json_path, gguf_path):
    """The same vocabulary as llama.cpp's converter stores a Llama-3 one: model gpt2, pre llama-bpe, control
    tokens of type 3, merges as "a b", no add_bos_token key (llama.cpp then adds BOS for llama-bpe)."""
    try:
        import gguf
    except ImportError:
        return  # the test says it skipped the GGUF part
    j = json.load(open(json_path, encoding="utf-8"))
    n = 1 + max([*j["model"]["vocab"].values(), *(a["id"] for a in j["added_tokens"])])
    tokens, types = [""] * n, [gguf.TokenType.NORMAL] * n
    for t, i in j["model"]["vocab"].items():
        tokens[i] = t
    for a in j["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    ids = {t: i for i, t in enumerate(tokens)}
    w = gguf.GGUFWriter(gguf_path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]])
    w.add_bos_token_id(ids["<|begin_of_text|>"])
    w.add_eos_token_id(ids["<|eot_id|>"])
    w.add_chat_template(LLAMA3_CHAT_TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def train(kind, corpus, cases_path, outdir):
    text = open(corpus, encoding="utf-8").read()[:300_000]
    if kind == "llama3":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = LLAMA3_SPECIALS
    elif kind == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>"]
    else:
        raise SystemExit(f"unknown kind {kind}")
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text[i:i + 4000] for i in range(0, len(text), 4000)], trainer)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "tokenizer.json")
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
        tok.save(path)
        with open(os.path.join(outdir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"},
                      "chat_template": LLAMA3_CHAT_TEMPLATE}, f)
        write_llama3_gguf(path, os.path.join(outdir, "tokenizer.gguf"))
    else:
        tok.save(path)
        j = json.load(open(path, encoding="utf-8"))
        j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
        j["model"].pop("ignore_merges", None)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
    tok = Tokenizer.from_file(path)  # the oracle reads the file exactly as we do
    run_cases(tok, cases_path, os.path.join(outdir, "oracle.json"))


def sentencepiece_ids(model_path, cases_path, out_path):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model_path)
    texts = [c["text"] for c in json.load(open(cases_path, encoding="utf-8"))["texts"]]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"ids": [sp.encode(t, out_type=int) for t in texts]}, f)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "smollm2":
        smollm2(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "sentencepiece":
        sentencepiece_ids(*sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == "train":
        train(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)

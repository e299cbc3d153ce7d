#!/usr/bin/env python3
"""Writes models/tests/data/tokenizer_cases.json: the texts and conversations test_tokenizer.cpp checks, with
reference results from transformers (too slow to load in every test run: ~10 s).

    .venv/bin/python scripts/make_tokenizer_fixtures.py    # after scripts/setup.sh (data/, the oracles in .venv)

Contents:
  texts      awkward strings (digit runs, whitespace runs, tabs, CRLF, contractions in both cases, non-ASCII
             letters, CJK, emoji with ZWJ, Unicode spaces, special tokens inside text) and paragraphs of
             data/corpus/jargon.txt
  messages   conversations for the chat templates
  smollm2_transformers
             ids: AutoTokenizer.from_pretrained(data/models, gguf_file=SmolLM2...gguf)(text, add_special_tokens=False)
             (transformers prepends <|im_start|> with add_special_tokens=True although the GGUF says
             add_bos_token=False; we follow the GGUF, so only the False case is recorded);
             chat / chat_generation: apply_chat_template(messages, tokenize=False, add_generation_prompt=False/True)
  llama3_chat / llama3_chat_generation
             Meta's Llama-3-Instruct template rendered by jinja2 as transformers renders chat templates
             (bos_token <|begin_of_text|>)
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "tests" / "data" / "tokenizer_cases.json"
sys.path.insert(0, str(ROOT / "models" / "tests"))
from tokenizer_oracle import LLAMA3_CHAT_TEMPLATE  # noqa: E402

AWKWARD = [
    "",
    " ",
    "   ",
    "\n",
    "Hello world",
    "Hello  world   three    spaces",
    " leading space",
    "trailing spaces   ",
    "tabs\tand\t\ttabs \t mixed",
    "lines\nand\n\nblank\n\n\nlines\r\nCRLF\r\n\r\nend",
    "  \n  mixed \t\n whitespace \n",
    "\n\n\n\n\n\n\n\n",
    " " * 40 + "x",
    "digits 1 12 123 1234 12345 123456789 3.14159 1,000,000 0x1F 2024-11-23",
    "x1y22z333 abc123def",
    "I'm, you're, he's, we've, I'd, they'll, don't; I'M YOU'RE HE'S WE'VE I'D THEY'LL DON'T",
    "'s 't 're 've 'm 'll 'd 'x ''s 'S 'Re",
    "long s: it'\u017f, kelvin: '\u212a",
    "café, naïve, résumé, façade, Ångström, Straße, ß, ẞ",
    "Привет, мир! Ёжик в тумане.",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "Ελληνικά: αβγ ΔΕΖ",
    "العربية ١٢٣ and देवनागरी ४५६, fractions ½ ¾, superscript x² x³, roman Ⅻ",
    "emoji: 😀🎉👍🏽 👨\u200d👩\u200d👧\u200d👦 🇫🇷",
    "math: ∑ x ≤ ½ · π ≈ 3.14, ∞ → ∅",
    "nbsp:\u00a0x ideographic:\u3000y line-sep:\u2028z para-sep\u2029w fs:\x1cq nel:\x85r",
    "special <|im_start|>user\nhello<|im_end|>\n<|endoftext|>",
    "<|im_start|><|im_end|><|im_start|>",
    "near-specials <|im_start| <im_start|> <|IM_START|> <|im_start|",
    "def f(x):\n    return x**2  # square\n\n\nclass A:\n\tpass\n",
    "URL https://example.com/a?b=c&d=e#f and e-mail someone@example.org",
    "punctuation!!! ??? ... --- *** ~~~ ``` ((())) [[]] {{}} <<>>",
    "a" * 300,
    "mixed: Hello, Wörld! 123 + 456 = 579 — “quoted” ‘single’ «guillemets»",
]

MESSAGES = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "  4  "}, {"role": "user", "content": "Thanks\n"}],
    [{"role": "user", "content": "Été: ½ <|im_start|>?"}, {"role": "assistant", "content": "Oui."}],
]


def jargon_paragraphs():
    text = (ROOT / "data" / "corpus" / "jargon.txt").read_text(encoding="utf-8")
    paras = [p for p in text.split("\n\n") if len(p) > 400]
    return [paras[i] for i in (5, 50, 300, 900, len(paras) - 3)]


def dump(value, depth=0) -> str:
    """JSON with one list element per line down to the second level (small diffs, readable texts)."""
    if depth < 2 and isinstance(value, dict):
        items = [f"{json.dumps(k)}: {dump(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n}" + ("\n" if depth == 0 else "")
    if depth < 3 and isinstance(value, list) and value and isinstance(value[0], (list, dict)):
        return "[\n" + ",\n".join(dump(v, 9) for v in value) + "\n]"
    return json.dumps(value, ensure_ascii=False)


def main() -> int:
    import jinja2
    import transformers
    from transformers import AutoTokenizer

    texts = [{"name": f"awkward{i}", "text": t} for i, t in enumerate(AWKWARD)]
    texts += [{"name": f"jargon{i}", "text": t} for i, t in enumerate(jargon_paragraphs())]
    tok = AutoTokenizer.from_pretrained(str(ROOT / "data" / "models"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    llama3 = env.from_string(LLAMA3_CHAT_TEMPLATE)
    out = {
        "generator": "scripts/make_tokenizer_fixtures.py",
        "transformers": transformers.__version__,
        "texts": texts,
        "messages": MESSAGES,
        "smollm2_transformers": {
            "ids": [tok(t["text"], add_special_tokens=False).input_ids for t in texts],
            "chat": [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=False) for m in MESSAGES],
            "chat_generation": [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                                for m in MESSAGES],
        },
        "llama3_chat": [llama3.render(messages=m, bos_token="<|begin_of_text|>", add_generation_prompt=False)
                        for m in MESSAGES],
        "llama3_chat_generation": [llama3.render(messages=m, bos_token="<|begin_of_text|>",
                                                 add_generation_prompt=True) for m in MESSAGES],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dump(out), encoding="utf-8")
    print(f"wrote {OUT} ({len(texts)} texts, {OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

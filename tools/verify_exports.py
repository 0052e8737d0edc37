#!/usr/bin/env python3
"""Loads NeuralForge's exports with the reference libraries and compares their logits with
NeuralForge's own. Run by hand (CI has no Python); results go to
tools/verify_exports_results.json and the table in tools/README.md.

What it does, with the built binary (`cargo build --release -p nf-cli`):

1. Fine-tunes stories260K with LoRA for a few steps (`neuralforge train`), and exports
   the run as `hf`, `peft`, `gguf` (f32, f16, bf16, q8_0, q4_0, q4_1) and `gguf-lora`;
   the base model is exported as `hf` too (PEFT and GGUF LoRA need a base to sit on).
2. Gets NeuralForge's logits of a few prompts from the run itself
   (`neuralforge generate --model RUN --logits FILE`).
3. Loads each export with the library its users would use and computes the logits of the
   same token ids:
   - hf: `transformers.AutoModelForCausalLM.from_pretrained(dir)`, and the exported
     `tokenizer.json` through `AutoTokenizer` (its ids must equal NeuralForge's);
   - peft: `peft.PeftModel.from_pretrained(base_hf, dir)`;
   - gguf: `transformers` with `gguf_file=` (which dequantizes with the `gguf` package
     and un-permutes llama's q/k rows);
   - gguf-lora: the `gguf` package's `GGUFReader` reads `lora_a`/`lora_b`; the script
     merges `W + alpha/r * B @ A` into the HF base (un-permuting B's q/k rows from GGUF's
     interleaved order the way transformers does for the base) and runs transformers.
4. Reports, per export, the largest |logit difference| and the RMS of the difference
   relative to the standard deviation of NeuralForge's logits, and whether the argmax
   agrees at every position: against the fine-tuned model in f32 (for quantized GGUFs
   this is the quantization error), and for GGUFs also against NeuralForge running the
   same file (this is what reading the file must agree on).

Usage:

    pip install --target /tmp/pyref/site torch transformers peft safetensors gguf numpy
    PYTHONPATH=/tmp/pyref/site python3 tools/verify_exports.py [--assets ../shared/assets]
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["Once upon a time", "The little dog ran to the park and", "Lily and Tom"]
QUANTS = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"]


def nf(binary, home, *args):
    out = subprocess.run(
        [str(binary), "--threads", "2", *map(str, args)],
        env={"NEURALFORGE_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"neuralforge {' '.join(map(str, args))} failed:\n{out.stderr}")
    return out


def nf_logits(binary, home, model_args, prompt, work):
    path = work / "logits.f32"
    nf(binary, home, "generate", *model_args, "--prompt", prompt, "--temperature", "0",
       "-n", "1", "--logits", path)
    ids = [int(x) for x in Path(str(path) + ".ids").read_text().split()]
    logits = np.fromfile(path, dtype="<f4").reshape(len(ids), -1)
    return ids, logits


def compare(ours, theirs):
    d = theirs.astype(np.float64) - ours.astype(np.float64)
    rel = np.sqrt((d**2).mean(axis=1)) / ours.std(axis=1)
    return {
        "max_abs_diff": float(np.abs(d).max()),
        "max_rel_rms": float(rel.max()),
        "argmax_agree": bool((ours.argmax(1) == theirs.argmax(1)).all()),
    }


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def unpermute(w, n_head):
    """GGUF llama's interleaved q/k rows back to HF's rotate-half order (transformers'
    `reverse_permute_weights` in its GGUF loader)."""
    dim = w.shape[0] // n_head // 2
    w = w.reshape(n_head, dim, 2, *w.shape[1:])
    return w.swapaxes(2, 1).reshape(-1, *w.shape[3:])


def gguf_lora_model(base_dir, lora_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    cfg = model.config
    r = GGUFReader(str(lora_path))
    alpha = float(r.fields["adapter.lora.alpha"].parts[-1][0])
    tensors = {t.name: np.array(t.data).reshape(list(reversed(t.shape.tolist()))) for t in r.tensors}
    hf_mod = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
              "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
              "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    params = dict(model.named_parameters())
    for name, a in tensors.items():
        if not name.endswith(".lora_a"):
            continue
        b = tensors[name[:-1] + "b"]
        _, layer, stem = name.split(".")[:3]
        rank = a.shape[0]
        if stem == "attn_q":
            b = unpermute(b, cfg.num_attention_heads)
        elif stem == "attn_k":
            b = unpermute(b, cfg.num_key_value_heads)
        w = params[f"model.layers.{layer}.{hf_mod[stem]}.weight"]
        with torch.no_grad():
            w += torch.from_numpy((alpha / rank) * (b @ a)).float()
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default=str(ROOT.parent / "shared" / "assets"))
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "neuralforge"))
    ap.add_argument("--out", default=str(ROOT / "tools" / "verify_exports_results.json"))
    args = ap.parse_args()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assets, binary = Path(args.assets), Path(args.bin)
    work = Path(tempfile.mkdtemp(prefix="nf-verify-"))
    home = work / "home"
    base = assets / "llama2c" / "stories260K.bin"
    tok = assets / "llama2c" / "tok512.bin"
    data = work / "stories.txt"
    data.write_text((assets / "corpus" / "tinystories_valid_sample_30k.txt").read_text()[:20000])
    run = work / "run"
    nf(binary, home, "train", "--model", base, "--tokenizer", tok, "--data", data, "--steps", "30",
       "--batch-size", "4", "--seq-len", "64", "--lora-rank", "4", "--lr", "2e-2",
       "--warmup", "2", "--eval-every", "0", "--out", run)
    ex = work / "exports"
    nf(binary, home, "export", base, "--tokenizer", tok, "--format", "hf", "--out", ex / "base-hf")
    nf(binary, home, "export", run, "--format", "hf", "--out", ex / "hf")
    nf(binary, home, "export", run, "--format", "peft", "--out", ex / "peft")
    nf(binary, home, "export", run, "--format", "gguf-lora", "--out", ex / "lora.gguf")
    for q in QUANTS:
        nf(binary, home, "export", run, "--format", "gguf", "--quant", q, "--out", ex / f"m-{q}.gguf")

    ours = [nf_logits(binary, home, ["--model", run], p, work) for p in PROMPTS]
    hf_tok = AutoTokenizer.from_pretrained(ex / "hf")
    tokenizer_ok = all(hf_tok.encode(p) == ids for p, (ids, _) in zip(PROMPTS, ours))

    models = {
        "hf (transformers)": lambda: AutoModelForCausalLM.from_pretrained(ex / "hf", torch_dtype=torch.float32),
        "peft (transformers + peft)": lambda: PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(ex / "base-hf", torch_dtype=torch.float32), ex / "peft"),
        "gguf-lora (gguf + transformers)": lambda: gguf_lora_model(ex / "base-hf", ex / "lora.gguf"),
    }
    for q in QUANTS:
        models[f"gguf {q} (transformers gguf_file)"] = lambda q=q: AutoModelForCausalLM.from_pretrained(
            ex, gguf_file=f"m-{q}.gguf", torch_dtype=torch.float32)
    # For each GGUF, NeuralForge's own logits on that same file: the library and we must
    # agree on what the file computes (dequantization, layout), whatever its type.
    same_file = {}
    for q in QUANTS:
        per = [nf_logits(binary, home, ["--model", ex / f"m-{q}.gguf"], p, work) for p in PROMPTS]
        assert all(a[0] == b[0] for a, b in zip(per, ours)), "GGUF tokenizer ids differ"
        same_file[f"gguf {q} (transformers gguf_file)"] = per
    results = {}
    for name, load in models.items():
        try:
            model = load().eval()
        except Exception as e:  # a library that cannot read a file is a result too
            results[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            print(f"{name}: cannot load: {e}")
            continue
        per = [compare(lg, hf_logits(model, ids)) for ids, lg in ours]
        results[name] = {
            "vs_finetuned_f32": {
                "max_abs_diff": max(x["max_abs_diff"] for x in per),
                "max_rel_rms": max(x["max_rel_rms"] for x in per),
                "argmax_agree": all(x["argmax_agree"] for x in per),
            }
        }
        if name in same_file:
            per = [compare(lg, hf_logits(model, ids)) for ids, lg in same_file[name]]
            results[name]["vs_neuralforge_same_file"] = {
                "max_abs_diff": max(x["max_abs_diff"] for x in per),
                "max_rel_rms": max(x["max_rel_rms"] for x in per),
                "argmax_agree": all(x["argmax_agree"] for x in per),
            }
        print(f"{name}: {results[name]}")
    report = {
        "versions": {k: version(k) for k in ["torch", "transformers", "peft", "safetensors", "gguf", "numpy"]}
        | {"python": platform.python_version()},
        "prompts": PROMPTS,
        "tokenizer_json_ids_equal": tokenizer_ok,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["versions"]))
    print("tokenizer.json ids equal:", tokenizer_ok)


if __name__ == "__main__":
    main()

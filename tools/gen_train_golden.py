#!/usr/bin/env python3
"""Generates crates/nf-model/tests/fixtures/train_grads/, golden losses, logits and gradients
computed by PyTorch + transformers + peft, which the Rust training tests compare against.

Versions used for the committed fixture (also recorded in train_grads/versions.json):

    torch 2.15.0 (CPU), transformers 5.24.0, peft 0.21.2, safetensors 0.8.0, numpy 2.4.6,
    Python 3.11.7

To regenerate (never needed in CI; torch is not a CI dependency):

    pip install --target /tmp/pyref/site torch transformers peft safetensors numpy
    PYTHONPATH=/tmp/pyref/site python3 tools/gen_train_golden.py

It runs on the CPU in about a minute and a half (mostly the finite-difference checks) and is
deterministic for a given seed and versions.

For each case (a tiny randomly initialised model) it writes train_grads/<case>/:

- model/config.json, model/model.safetensors: the base weights, HF layout and names, float32
  (save_pretrained of a float32 copy; config.json is the standard HF one, plus a top-level
  "rope_theta" and "torch_dtype": "float32" whatever the transformers version writes).
- batch.json: {"tokens": [B][T] ids, "labels": [B][T] already-shifted next-token targets
  (labels[b][t] is the target for position t; -100 = ignored, 3 positions in all),
  "loss": mean cross-entropy over the non-ignored positions of the base model,
  "lora_loss": the same for the base + LoRA adapter, plus a few descriptive fields}.
  The loss is computed here, not by HF (no internal shifting):
  cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100, reduction="mean").
- logits.safetensors: "logits" [B, T, V] float32, base model.
- grads.safetensors: d loss / d every trainable parameter of the base model (full fine-tune),
  under the HF parameter names (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight,
  ..., lm_head.weight only when the embeddings are untied; when tied, the embedding gradient
  holds both the input-embedding and the output-projection contributions), float32.
- adapter/adapter_config.json, adapter/adapter_model.safetensors: a PEFT LoRA adapter
  (r=4, lora_alpha=8, dropout 0, all of q/k/v/o/gate/up/down_proj, bias "none") on the same
  base, saved by peft's save_pretrained from a float32 copy. PEFT zero-inits lora_B, which
  would make every lora_A gradient zero, so lora_B is set to normal(0, 0.1); lora_A keeps
  PEFT's (seeded) kaiming-uniform init.
- lora_grads.safetensors: d lora_loss / d every lora_A / lora_B, under the exact key names of
  adapter_model.safetensors (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight),
  float32.

The reference is computed in float64 on weights that are exactly float32 values (every
parameter is rounded to float32 and back before anything is computed or saved), so the
reference is what an exact computation on the stored f32 weights gives. Attention is HF's
"eager" implementation. HF computes RoPE's cos/sin in float32 even for a float64 model; this
script replaces the rotary module's forward with a float64 one (inv_freq = 1/theta^(2i/d),
rotate-half layout as HF), and checks that it agrees with HF's own to float32 precision.

Initialisation (seeded): every linear weight ~ N(0, 0.2), embeddings / lm_head ~ N(0, 0.1),
biases ~ N(0, 0.1), every RMSNorm weight (including Qwen3's q_norm/k_norm) 1 + 0.1 N(0, 1),
so that no gradient is trivially zero or symmetric.
"""

import contextlib
import copy
import json
import math
import platform
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config
from transformers.models.llama import modeling_llama
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3

MODELING = [modeling_llama, modeling_qwen2, modeling_qwen3]

SEED = 20250601
B, T = 2, 8
# (batch row, position) of the ignored labels.
IGNORED = [(0, 2), (1, 0), (1, T - 1)]
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/nf-model/tests/fixtures/train_grads"

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

COMMON = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=64,
    max_position_embeddings=64,
    hidden_act="silu",
)

CASES = {
    "llama_gqa": (
        LlamaConfig,
        dict(COMMON, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
             attention_bias=False, mlp_bias=False),
    ),
    "qwen3_qknorm": (
        Qwen3Config,
        dict(COMMON, head_dim=16, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
             attention_bias=False, use_sliding_window=False, sliding_window=None),
    ),
    "qwen2_bias": (
        Qwen2Config,
        dict(COMMON, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
             use_sliding_window=False, sliding_window=None),
    ),
}


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "peft": version("peft"),
        "safetensors": version("safetensors"),
        "numpy": np.__version__,
    }


def round_to_f32(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.float().double())


def init_weights(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            elif "embed_tokens" in name or name.startswith("lm_head"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def head_dim_of(cfg):
    hd = getattr(cfg, "head_dim", None)
    return hd if hd else cfg.hidden_size // cfg.num_attention_heads


def rope_theta_of(cfg):
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:  # transformers >= 5 keeps it in rope_parameters
        theta = cfg.rope_parameters["rope_theta"]
    return float(theta)


def rms_norm_f64(self, hidden_states):
    # HF's RMSNorm.forward without the round trip through float32.
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def rotary_f64(self, x, position_ids):
    # HF's default RotaryEmbedding.forward (rotate-half layout: cos/sin repeat over the two
    # halves of head_dim), with inv_freq and cos/sin in float64 instead of float32.
    assert self.rope_type == "default" and float(self.attention_scaling) == 1.0
    dim = head_dim_of(self.config)
    inv_freq = 1.0 / (rope_theta_of(self.config)
                      ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = position_ids[..., None].to(torch.float64) * inv_freq.to(x.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def make_eager_attention_f64(mod):
    # HF's eager_attention_forward with the softmax in the query's dtype instead of float32.
    def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0,
                                **kwargs):
        assert dropout == 0.0
        key_states = mod.repeat_kv(key, module.num_key_value_groups)
        value_states = mod.repeat_kv(value, module.num_key_value_groups)
        attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=query.dtype)
        attn_output = torch.matmul(attn_weights, value_states).transpose(1, 2).contiguous()
        return attn_output, attn_weights

    return eager_attention_forward


@contextlib.contextmanager
def exact_f64():
    """Within it, the Llama/Qwen2/Qwen3 models compute float64 throughout.

    HF's modeling code, even for a float64 model, casts the RMSNorm input to float32, does the
    eager softmax in float32 and computes RoPE's inv_freq/cos/sin in float32; that costs ~1e-7
    relative and makes finite differences disagree with autograd. These three are patched
    (class forwards and the module-level eager_attention_forward, restored on exit)."""
    saved = []
    for mod in MODELING:
        saved.append((mod, "eager_attention_forward", mod.eager_attention_forward))
        mod.eager_attention_forward = make_eager_attention_f64(mod)
        for name in dir(mod):
            obj = getattr(mod, name)
            if isinstance(obj, type) and name.endswith("RMSNorm"):
                saved.append((obj, "forward", obj.forward))
                obj.forward = rms_norm_f64
            elif isinstance(obj, type) and name.endswith("RotaryEmbedding"):
                saved.append((obj, "forward", obj.forward))
                obj.forward = rotary_f64
    try:
        yield
    finally:
        for owner, attr, old in reversed(saved):
            setattr(owner, attr, old)


def ce_loss(logits, labels):
    v = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), ignore_index=-100,
                           reduction="mean")


def fix_config_json(path, cfg):
    conf = json.loads(path.read_text())
    conf["torch_dtype"] = "float32"
    if "dtype" in conf:
        conf["dtype"] = "float32"
    conf.setdefault("rope_theta", rope_theta_of(cfg))
    conf.setdefault("head_dim", head_dim_of(cfg))
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    return conf


def f32_dict(d):
    return {k: v.detach().to(torch.float32).contiguous() for k, v in d.items()}


def finite_diff_check(model, tokens, labels, grads, gen):
    """Central differences in float64 at two entries of every tensor in grads (keyed by
    model.named_parameters() names): a random one and the largest |gradient|. Returns the worst
    |fd - autograd| / (1e-6 + |autograd|)."""
    params = dict(model.named_parameters())
    h = 1e-5
    worst = 0.0
    for name, grad in grads.items():
        p = params[name]
        flat_rand = int(torch.randint(0, p.numel(), (1,), generator=gen))
        flat_max = int(grad.abs().argmax())
        for flat in (flat_rand, flat_max):
            idx = np.unravel_index(flat, tuple(p.shape))
            idx = tuple(int(i) for i in idx)
            with torch.no_grad():
                old = p[idx].item()
                p[idx] = old + h
                lp = ce_loss(model(input_ids=tokens, use_cache=False).logits, labels).item()
                p[idx] = old - h
                lm = ce_loss(model(input_ids=tokens, use_cache=False).logits, labels).item()
                p[idx] = old
            fd = (lp - lm) / (2 * h)
            g = grad[idx].item()
            assert abs(fd - g) <= 1e-8 + 1e-6 * abs(g), (name, idx, fd, g)
            worst = max(worst, abs(fd - g) / (1e-6 + abs(g)))
    return worst


def run_case(case_idx, case, cfg_cls, kwargs):
    from peft import LoraConfig, get_peft_model

    out = OUT / case
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(SEED + case_idx)
    gen = torch.Generator().manual_seed(SEED + case_idx)

    cfg = cfg_cls(**kwargs)
    cfg.architectures = [{"LlamaConfig": "LlamaForCausalLM", "Qwen2Config": "Qwen2ForCausalLM",
                          "Qwen3Config": "Qwen3ForCausalLM"}[cfg_cls.__name__]]
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    model = model.double()
    init_weights(model, gen)
    round_to_f32(model)
    model.eval()  # no dropout anywhere (all dropouts are 0 anyway)

    # Batch: a (T+1)-token sequence per row; tokens = seq[:T], labels = seq[1:].
    seq = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
    tokens = seq[:, :T].clone()
    labels = seq[:, 1:].clone()
    for b, t in IGNORED:
        labels[b, t] = -100

    # Base weights, float32, HF layout.
    m32 = copy.deepcopy(model).float()
    m32.save_pretrained(out / "model", safe_serialization=True)
    for extra in ["generation_config.json"]:
        (out / "model" / extra).unlink(missing_ok=True)
    conf = fix_config_json(out / "model" / "config.json", cfg)
    del m32

    # HF's own computation (float32 RMSNorm/softmax/RoPE inside), for comparison only.
    model.zero_grad(set_to_none=True)
    loss_native = ce_loss(model(input_ids=tokens, use_cache=False).logits, labels)
    loss_native.backward()
    grads_native = {n: p.grad.clone() for n, p in model.named_parameters()}

    with exact_f64():
        # Full fine-tune reference.
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=tokens, use_cache=False).logits
        loss = ce_loss(logits, labels)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        assert all(g is not None and g.abs().max() > 0 for g in grads.values())
        fd_worst = finite_diff_check(model, tokens, labels, grads, gen)
        save_file(f32_dict(grads), str(out / "grads.safetensors"))
        save_file({"logits": logits.detach().float().contiguous()},
                  str(out / "logits.safetensors"))
        native_gap = max(((grads_native[n] - g).abs().max() / g.abs().max()).item()
                         for n, g in grads.items())

        # The saved files reload to the same model (f32 -> f64 is exact).
        reloaded = AutoModelForCausalLM.from_pretrained(out / "model", attn_implementation="eager",
                                                        dtype=torch.float64)
        with torch.no_grad():
            rl = reloaded(input_ids=tokens, use_cache=False).logits
        assert torch.equal(rl, logits.detach()), (rl - logits).abs().max()
        del reloaded

        # LoRA on the same base.
        lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS,
                          bias="none")
        peft_model = get_peft_model(copy.deepcopy(model), lcfg).double()
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        round_to_f32(peft_model)
        peft_model.float()
        peft_model.save_pretrained(out / "adapter")
        peft_model.double()
        (out / "adapter" / "README.md").unlink(missing_ok=True)
        # peft writes target_modules from a set (order varies with PYTHONHASHSEED): sort it.
        acfg_path = out / "adapter" / "adapter_config.json"
        acfg = json.loads(acfg_path.read_text())
        acfg["target_modules"] = sorted(acfg["target_modules"])
        acfg_path.write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")

        peft_model.eval()
        peft_model.zero_grad(set_to_none=True)
        lora_loss = ce_loss(peft_model(input_ids=tokens, use_cache=False).logits, labels)
        lora_loss.backward()
        raw = {n: p.grad.detach().clone() for n, p in peft_model.named_parameters()
               if p.requires_grad}
        assert raw and all("lora_" in n for n in raw), sorted(raw)
        assert all(g.abs().max() > 0 for g in raw.values())
        lora_fd_worst = finite_diff_check(peft_model, tokens, labels, raw, gen)
        lora_grads = {n.replace(".default.", "."): g for n, g in raw.items()}
        saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
        assert set(saved) == set(lora_grads), (sorted(saved)[:3], sorted(lora_grads)[:3])
        params = {n.replace(".default.", "."): p for n, p in peft_model.named_parameters()}
        assert all(torch.equal(saved[k].double(), params[k]) for k in saved)
        assert all(saved[k].dtype == torch.float32 for k in saved)
        save_file(f32_dict(lora_grads), str(out / "lora_grads.safetensors"))

    batch = {
        "tokens": tokens.tolist(),
        "labels": labels.tolist(),
        "loss": loss.item(),
        "lora_loss": lora_loss.item(),
        "n_targets": int((labels != -100).sum()),
        "reference_dtype": "float64",
        "loss_hf_native": loss_native.item(),
        "lora": {"r": 4, "lora_alpha": 8, "scaling": 2.0, "target_modules": LORA_TARGETS},
    }
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in batch.items()]
    (out / "batch.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")

    print(f"{case}: loss {loss.item():.9f} (ln V = {math.log(cfg.vocab_size):.6f}), "
          f"lora_loss {lora_loss.item():.9f}, HF-native loss gap "
          f"{abs(loss_native.item() - loss.item()):.2e}, HF-native grad gap {native_gap:.2e} "
          f"(of max|g|), worst fd rel err {fd_worst:.1e} / lora {lora_fd_worst:.1e}, "
          f"{len(grads)} grads, {len(lora_grads)} lora grads, head_dim {conf.get('head_dim')}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (case, (cfg_cls, kwargs)) in enumerate(CASES.items()):
        run_case(i, case, cfg_cls, kwargs)
    v = versions()
    v["seed"] = SEED
    (OUT / "versions.json").write_text(json.dumps(v, indent=2) + "\n")
    print(json.dumps(v))


if __name__ == "__main__":
    main()

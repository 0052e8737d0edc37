#!/usr/bin/env python3
"""bench/train_peer.py - PyTorch training-throughput peer for `neuralforge bench train`.

A benchmark peer, not a dependency: nothing in NeuralForge imports or needs it. It
measures PyTorch (eager, CPU) the way crates/nf-cli/src/cmd/bench.rs measures us:

  * the same fixed token ids: inputs[i] = i*7919 % vocab, targets[i] = (i+1)*7919 % vocab,
    over a [batch, seq] batch (loss over all batch*seq positions, mean cross-entropy);
  * one warm-up step, then --steps timed steps, each timed from zero_grad to the end of
    optimizer.step(): zero_grad, forward, cross-entropy, backward, AdamW
    (lr 1e-4, betas 0.9/0.999, eps 1e-8, weight decay 0);
  * tokens/s per step = batch*seq / step seconds; mean ± sample stddev (n-1) over steps.

Workloads (random weights, seed 0: the benchmark measures speed, not quality):
  stories110m   llama2.c stories110M shape (dim 768, 12 layers, 12 heads, ffn 2048,
                vocab 32000, tied embeddings), full fine-tuning of all parameters.
                Matches `neuralforge bench train` with its default random model.
  smollm2-lora  SmolLM2-135M shape (dim 576, 30 layers, 9/3 heads, ffn 1536, vocab 49152,
                rope theta 1e5, tied), checked against the GGUF header when the file is
                there; PEFT LoRA r=16 alpha=32 dropout 0 on q,k,v,o,gate,up,down; AdamW on
                the LoRA parameters only. Base weights are fp32 (random), not Q4_1 (NeuralForge
                keeps the frozen base in the GGUF's Q4_1 when given that file).

Output: NDJSON on stdout in the envelope of `neuralforge --json` (v, type, ts), one
`bench.peer` line (versions, machine) then `bench.result` lines (test train_b{B}_t{T} in
tokens/s, ms_per_step in ms, peak_rss in MiB); a human summary on stderr.

Pins: torch 2.15.0, transformers 5.24.0, peft 0.21.2 (CPU execution).
Run:  PYTHONPATH=/tmp/pyref/site python3 bench/train_peer.py --workload stories110m \
          --threads 2 --batch 1 --seq 256 --steps 5 --mode fp32
"""
import argparse, datetime, json, os, platform, resource, struct, subprocess, sys, time, warnings
from pathlib import Path

import peft
import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

warnings.filterwarnings("ignore", category=FutureWarning)  # transformers/peft deprecations
IMPORT_RSS = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: after imports

ROOT = Path(__file__).resolve().parent.parent  # repository root
DEFAULT_GGUF = ROOT.parent / "shared/assets/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--workload", choices=["stories110m", "smollm2-lora"], default="stories110m")
ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
ap.add_argument("--mode", choices=["fp32", "bf16"], default="fp32",
                help="bf16: torch.autocast('cpu', bfloat16) around forward + loss; weights, "
                     "grads and AdamW state stay fp32")
ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                help="transformers attention implementation (sdpa = PyTorch's fused kernel)")
ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF,
                help="smollm2-lora: GGUF whose header the architecture is checked against")
args = ap.parse_args()
if args.batch < 1 or args.seq < 1 or args.steps < 1 or args.threads < 1:
    ap.error("--batch, --seq, --steps and --threads must be >= 1")


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def emit(kind, **fields):
    print(json.dumps({"v": 1, "type": kind, "ts": now(), **fields}), flush=True)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def parallel_summary():
    """'OpenMP 4.5, MKL 2024.2, oneDNN v3.13.3, backend OpenMP' from parallel_info()."""
    parts = []
    for line in torch.__config__.parallel_info().splitlines():
        s = line.strip()
        if s.startswith("OpenMP") and "a.k.a." in s:
            parts.append("OpenMP " + s.split("a.k.a. OpenMP")[1].strip(" )"))
        elif "Math Kernel Library Version" in s:
            parts.append("MKL " + s.split("Version")[1].split("-")[0].strip())
        elif s.startswith("Intel(R) MKL-DNN") or s.startswith("oneDNN"):
            parts.append("oneDNN " + s.split()[2 if s.startswith("Intel") else 1])
        elif s.startswith("ATen parallel backend:"):
            parts.append("backend " + s.split(":", 1)[1].strip())
    return ", ".join(parts)


def gguf_header(path):
    """Metadata key/values and tensor names of a GGUF file (values of arrays: their length)."""
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def rstr():
            return f.read(rd("Q")).decode("utf-8", "replace")
        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

        def value(t):
            if t in scalar:
                return rd(scalar[t])
            if t == 8:
                return rstr()
            if t == 9:
                et, n = rd("I"), rd("Q")
                if et in scalar:
                    f.seek(n * struct.calcsize(scalar[et]), 1)
                else:
                    for _ in range(n):
                        value(et)
                return n
            raise ValueError(f"GGUF value type {t}")
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        rd("I")
        n_tensors, n_kv = rd("Q"), rd("Q")
        kv = {}
        for _ in range(n_kv):
            k = rstr()
            kv[k] = value(rd("I"))
        names = set()
        for _ in range(n_tensors):
            names.add(rstr())
            f.seek(8 * rd("I") + 4 + 8, 1)
        return kv, names


def build():
    """(model, trainable params, description)."""
    torch.manual_seed(0)
    if args.workload == "stories110m":
        cfg = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                          num_attention_heads=12, num_key_value_heads=12, vocab_size=32000,
                          max_position_embeddings=max(256, args.seq), tie_word_embeddings=True,
                          rms_norm_eps=1e-5, rope_theta=10000.0)
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=args.attn)
        params = [p for p in model.parameters() if p.requires_grad]
        return model, params, "full fine-tuning"

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                      max_position_embeddings=max(8192, args.seq), tie_word_embeddings=True,
                      rms_norm_eps=1e-5, rope_theta=100000.0)
    if args.gguf.is_file():
        kv, names = gguf_header(args.gguf)
        a = kv.get("general.architecture", "llama")
        want = {"embedding_length": cfg.hidden_size, "feed_forward_length": cfg.intermediate_size,
                "block_count": cfg.num_hidden_layers, "attention.head_count": cfg.num_attention_heads,
                "attention.head_count_kv": cfg.num_key_value_heads,
                "rope.freq_base": cfg.rope_parameters["rope_theta"],
                "attention.layer_norm_rms_epsilon": cfg.rms_norm_eps}
        bad = [f"{k}: gguf {kv.get(f'{a}.{k}')} vs {v}" for k, v in want.items()
               if kv.get(f"{a}.{k}") is None or abs(float(kv[f"{a}.{k}"]) - float(v)) > 1e-6 * abs(float(v))]
        vocab = kv.get(f"{a}.vocab_size", kv.get("tokenizer.ggml.tokens"))
        if vocab != cfg.vocab_size:
            bad.append(f"vocab: gguf {vocab} vs {cfg.vocab_size}")
        if ("output.weight" in names) == cfg.tie_word_embeddings:
            bad.append("tied embeddings differ")
        if bad:
            sys.exit(f"train_peer: {args.gguf} does not match the SmolLM2-135M config: " + "; ".join(bad))
        log(f"architecture checked against {args.gguf.name} (weights random, not loaded)")
    else:
        log(f"warning: {args.gguf} not found; SmolLM2-135M config unchecked")
    from peft import LoraConfig, get_peft_model
    base = LlamaForCausalLM._from_config(cfg, attn_implementation=args.attn)
    lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                      "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, lcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, params, "lora r16 alpha32 (q,k,v,o,gate,up,down)"


def mean_std(v):  # as bench.rs: sample stddev, n-1 (0 for one value)
    m = sum(v) / len(v)
    return m, (sum((x - m) ** 2 for x in v) / (max(len(v), 2) - 1)) ** 0.5


def main():
    torch.set_num_threads(args.threads)
    machine = cpu_model()
    info = dict(peer="pytorch", workload=args.workload, mode=args.mode, attn=args.attn,
                torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                python=platform.python_version(), cpu=machine, cpus=os.cpu_count(),
                threads=torch.get_num_threads(), parallel=parallel_summary(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                date=datetime.date.today().isoformat())
    model, params, method = build()
    model.train()
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in params)
    cfg = model.config
    V = cfg.vocab_size
    n = args.batch * args.seq
    ids = torch.tensor([i * 7919 % V for i in range(n)], dtype=torch.long).view(args.batch, args.seq)
    tgt = torch.tensor([(i + 1) * 7919 % V for i in range(n)], dtype=torch.long).view(-1)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    info.update(method=method, total_params=n_total, trainable_params=n_train,
                batch=args.batch, seq=args.seq, steps=args.steps,
                import_rss_mib=round(IMPORT_RSS / 1024, 1))
    emit("bench.peer", **info)
    log(f"pytorch {args.workload} ({method}), {n_total} params ({n_train} trainable), "
        f"{args.mode} attn={args.attn}, batch {args.batch} x {args.seq} tokens\n"
        f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"python {platform.python_version()}; cpu: {machine}, {os.cpu_count()} cpus, "
        f"{torch.get_num_threads()} threads ({info['parallel']}, {info['cpu_capability']}); {info['date']}")

    def step():
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "bf16"):
            logits = model(input_ids=ids, use_cache=False).logits
            loss = F.cross_entropy(logits.reshape(-1, V).float(), tgt)
        loss.backward()
        opt.step()
        return time.perf_counter() - t, loss.item()

    step()  # warm-up (allocations, AdamW state, oneDNN primitive creation)
    secs, losses = [], []
    for _ in range(args.steps):
        s, l = step()
        secs.append(s)
        losses.append(l)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    thr = torch.get_num_threads()
    test = f"train_b{args.batch}_t{args.seq}"
    tm, ts = mean_std([n / s for s in secs])
    mm, ms = mean_std([s * 1e3 for s in secs])
    extra = dict(peer="pytorch", workload=args.workload, mode=args.mode)
    emit("bench.result", test=test, threads=thr, value=tm, stddev=ts, unit="tokens/s", reps=len(secs), **extra)
    emit("bench.result", test="ms_per_step", threads=thr, value=mm, stddev=ms, unit="ms", reps=len(secs), **extra)
    emit("bench.result", test="peak_rss", threads=thr, value=rss, stddev=0.0, unit="MiB", reps=1, **extra)
    log(f"{test:<14} {thr:>2} threads  {tm:>10.2f} ± {ts:<8.2f} tokens/s  "
        f"{mm:.1f} ± {ms:.1f} ms/step  peak RSS {rss:.0f} MiB  last loss {losses[-1]:.3f}")


if __name__ == "__main__":
    main()

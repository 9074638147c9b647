#!/usr/bin/env python3
"""Checks that transformers computes what cram computes, for every Hugging Face mapping.

For each cram run folder given, this script
  1. exports it with `cram export hf` (into a temporary folder, or --keep DIR/<run name>),
  2. loads the export with AutoTokenizer and the AutoModel class the config names
     (trust_remote_code=True for crammed-bert's own modeling file),
  3. checks that the tokenizer encodes a few English lines to the ids cram encodes
     (`cram infer --text-file`), and
  4. compares the fp32 logits at every position with cram's (`cram infer`) on those
     lines and on random token ids, and
  5. the other way round: initialises a transformers model of the same config at random
     (Llama with an untied lm_head), saves it, imports it with `cram import hf` and
     compares logits again.
It exits with status 1 when an id differs or a logit differs by more than --tolerance.

Needs only torch, transformers and numpy (and the cram binary):
    python3 scripts/check_hf_parity.py --cram target/release/cram RUN [RUN ...]
    python3 scripts/check_hf_parity.py --cram target/release/cram --train .corpus/sotu --work /tmp/parity
The second form first prepares data and trains short, small runs of the bert-base,
gpt-small and crammed-bert architectures on the CPU, then checks all three.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

LINES = [
    "The State of the Union is strong, and the Congress shall make no law.",
    "We hold these truths to be self-evident, that all men are created equal.",
    "Fellow-citizens of the Senate and of the House of Representatives:",
    "It is a great pleasure to report that the national debt has been reduced by 12,000,000 dollars.",
]

# Small versions of the three architectures: sizes are free, the structure is the preset's.
SMALL = [
    "model.hidden=64",
    "model.layers=2",
    "model.heads=4",
    "model.ffn=256",
    "train.micro_batch=16",
    "train.batch_size=32",
    "train.eval_every=50",
    "train.eval_batches=4",
]
# Preset, objective, and what else it needs to learn something in a few hundred steps
# (bert-base's 1e-4 is tuned for its full size and 24 hours).
PRESETS = [("bert-base", "mlm", ["train.lr=5e-4"]), ("gpt-small", "causal", []), ("crammed-bert", "mlm", [])]


def run(cmd, capture=False):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, check=True, stdout=subprocess.PIPE if capture else None, text=True)
    return result.stdout


def train_runs(cram, corpus, work, steps):
    """Prepares the corpus for encoders and decoders and trains one small run per preset."""
    data = {
        "mlm": os.path.join(work, "data-mlm"),
        "causal": os.path.join(work, "data-causal"),
    }
    for kind, preset in [("mlm", "crammed-bert"), ("causal", "gpt-small")]:
        if not os.path.exists(os.path.join(data[kind], "manifest.json")):
            run([cram, "data", "prepare", "--input", corpus, "--out", data[kind], "--preset", preset,
                 "--vocab-size", "4096", "--seq-len", "64"])
    runs = []
    for preset, kind, extra in PRESETS:
        out = os.path.join(work, "runs", preset)
        if not os.path.exists(os.path.join(out, "config.toml")):
            sets = [arg for s in SMALL + extra for arg in ("--set", s)]
            run([cram, "pretrain", "--preset", preset, "--data", data[kind], "--out", out,
                 "--budget", f"{steps} steps", "--quiet"] + sets)
        runs.append(out)
    return runs


def cram_infer(cram, run_dir, flag, path):
    # fp32 on the CPU: `--device auto` would take a GPU, whose activations are bf16.
    out = json.loads(run([cram, "infer", "--run", run_dir, "--device", "cpu", flag, path], capture=True))
    return out["ids"], [np.asarray(l, dtype=np.float32) for l in out["logits"]]


def load_model(export, device):
    config = json.load(open(os.path.join(export, "config.json")))
    arch = config["architectures"][0]
    if arch == "LlamaForCausalLM":
        cls, remote = AutoModelForCausalLM, False
    else:
        cls, remote = AutoModelForMaskedLM, "auto_map" in config
    # No dtype argument (its name changed between transformers 4 and 5): the
    # weights are f32 and .float() keeps them so.
    model, info = cls.from_pretrained(export, trust_remote_code=remote, output_loading_info=True)
    loaded = type(model).__name__
    if loaded != arch:
        sys.exit(f"{export}: transformers loaded {loaded}, but config.json names {arch}")
    # A missing tensor would be initialised at random, an unexpected one ignored: both are export bugs.
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):
            sys.exit(f"{export}: transformers reports {kind}: {sorted(info[kind])}")
    model = model.float()
    return model.to(device).eval(), arch, remote


@torch.no_grad()
def max_diff(model, device, ids, cram_logits):
    worst = 0.0
    for seq, expected in zip(ids, cram_logits):
        x = torch.tensor([seq], dtype=torch.long, device=device)
        got = model(input_ids=x).logits[0].float().cpu().numpy()
        if got.shape != expected.shape:
            sys.exit(f"logits of shape {got.shape} from transformers, {expected.shape} from cram")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def check(cram, run_dir, export, args, rng):
    run([cram, "export", "hf", "--run", run_dir, "--out", export, "--force"])
    model, arch, remote = load_model(export, args.device)
    # transformers 5 loads the model's config before the tokenizer, so a
    # folder with custom code asks about it unless told; the tokenizer itself
    # is a stock one either way.
    tokenizer = AutoTokenizer.from_pretrained(export, trust_remote_code=remote)
    vocab = model.config.vocab_size

    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "lines.txt")
        with open(text_path, "w") as f:
            f.write("\n".join(LINES) + "\n")
        text_ids, text_logits = cram_infer(cram, run_dir, "--text-file", text_path)
        hf_ids = [tokenizer(line)["input_ids"] for line in LINES]
        ids_ok = hf_ids == text_ids

        random_ids = [rng.integers(0, vocab, size=args.seq_len).tolist() for _ in range(args.sequences)]
        ids_path = os.path.join(tmp, "ids.json")
        with open(ids_path, "w") as f:
            json.dump(random_ids, f)
        _, random_logits = cram_infer(cram, run_dir, "--ids-file", ids_path)

    diff_text = max_diff(model, args.device, text_ids, text_logits)
    diff_random = max_diff(model, args.device, random_ids, random_logits)
    scale = max(float(np.abs(l).max()) for l in text_logits + random_logits)
    ok = ids_ok and max(diff_text, diff_random) <= args.tolerance
    print(f"{'ok  ' if ok else 'FAIL'} {arch:20s} {run_dir}")
    print(f"     tokenizer ids equal cram's: {ids_ok} ({len(LINES)} lines, {sum(map(len, hf_ids))} tokens)")
    print(f"     max |logit diff|: {diff_text:.3e} on the lines, {diff_random:.3e} on "
          f"{args.sequences}x{args.seq_len} random ids (largest |logit| {scale:.2f}, tolerance {args.tolerance:g})")
    if not ids_ok:
        for line, a, b in zip(LINES, hf_ids, text_ids):
            if a != b:
                print(f"     {line!r}: transformers {a} vs cram {b}")
    with tempfile.TemporaryDirectory() as tmp:
        ok = check_import(cram, export, arch, remote, args, rng, tmp) and ok
    return ok


def check_import(cram, export, arch, remote, args, rng, tmp):
    """A randomly initialised transformers model of the export's config, imported by cram."""
    config = AutoConfig.from_pretrained(export, trust_remote_code=remote)
    cls = AutoModelForCausalLM if arch == "LlamaForCausalLM" else AutoModelForMaskedLM
    if arch == "LlamaForCausalLM":
        config.tie_word_embeddings = False
    torch.manual_seed(args.seed)
    # BERT draws its token-type rows at random too; cram folds row 0 into the positions.
    model = cls.from_config(config, trust_remote_code=remote).float().eval()
    source = os.path.join(tmp, "random-" + arch)
    model.save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        with open(os.path.join(export, name), "rb") as f, open(os.path.join(source, name), "wb") as g:
            g.write(f.read())
    imported = os.path.join(tmp, "imported-" + arch)
    run([cram, "import", "hf", source, "--out", imported, "--force"])
    ids = [rng.integers(0, config.vocab_size, size=args.seq_len).tolist() for _ in range(args.sequences)]
    ids_path = os.path.join(tmp, "import-ids.json")
    with open(ids_path, "w") as f:
        json.dump(ids, f)
    _, logits = cram_infer(cram, imported, "--ids-file", ids_path)
    diff = max_diff(model.to(args.device), args.device, ids, logits)
    ok = diff <= args.tolerance
    print(f"     import: max |logit diff| {diff:.3e} for a random {arch} imported by cram: {'ok' if ok else 'FAIL'}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="cram run folders to export and check")
    p.add_argument("--cram", default="target/release/cram", help="the cram binary")
    p.add_argument("--train", metavar="CORPUS", help="first train small runs of the three presets on this text")
    p.add_argument("--work", default="/tmp/cram-hf-parity", help="folder for --train's data and runs")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps of each --train run")
    p.add_argument("--keep", metavar="DIR", help="write the exports to DIR/<run name> instead of a temporary folder")
    p.add_argument("--sequences", type=int, default=4, help="random id sequences per model")
    p.add_argument("--seq-len", type=int, default=64, help="length of the random sequences")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |logit difference|")
    p.add_argument("--device", default="cpu", help="torch device for transformers (cpu, cuda)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    # fp32 means fp32: no TF32 matmuls on GPUs that have them.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runs = list(args.runs)
    if args.train:
        runs += train_runs(args.cram, args.train, args.work, args.steps)
    if not runs:
        p.error("give run folders, or --train CORPUS")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device}")
    rng = np.random.default_rng(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in runs:
            name = os.path.basename(os.path.normpath(run_dir))
            export = os.path.join(args.keep or tmp, name)
            results.append(check(args.cram, run_dir, export, args, rng))
    print("all checks passed" if all(results) else "SOME CHECKS FAILED")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()

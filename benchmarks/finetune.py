"""Fine-tune the course's two pretrained models with LoRA (exercise 18's llmref.finetune).

    .venv/bin/python benchmarks/finetune.py            # about 8 minutes on one busy core

(a) The course GPT (llmref.course_model.load()): supervised fine-tuning, then DPO.
    Each example is 64 characters of the Python documentation (the prompt) and the 40 that
    follow them (the answer), wrapped in a format the model never saw in pretraining:

        ### Text\\n<prompt>\\n### Continue\\n<answer>

    SFT (sft_loss, masked to the answer) teaches the format: the held-out answer loss falls
    from what the pretrained model gives after the unfamiliar template towards what it
    gives for the plain continuation. The SFT adapters are then merged (merge_lora) and the
    merged model is both DPO's frozen reference and, with fresh adapters, its policy. The
    preference pairs: chosen = the true answer, rejected = the same answer with its words
    in another order (same characters, same length: only the order tells them apart).
    Recorded over the DPO steps: the chosen-minus-rejected reward margin on the training
    batches and on held-out pairs, the held-out reward accuracy (margin > 0), and how often
    the policy itself gives the chosen answer the higher log-probability.

(b) The MiniLM encoder (llmref.encoder): which of eight standard-library modules a
    docstring comes from. Docstrings of the modules' public functions and classes are read
    with inspect on this machine's Python and split 70/30 by a hash of the name. A
    classification head on mean-pooled hidden states is trained (i) on the frozen encoder's
    features (a linear probe) and (ii) together with LoRA adapters on query and value;
    held-out accuracy against chance and the majority class.

Writes benchmarks/results/finetune.json: curves, accuracies, steps, seconds, trainable and
total parameter counts, the machine. Numbers depend on the machine and its load; (b)'s data
also on the Python version, whose docstrings differ.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import platform
import random
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from llmref import corpus, course_model, encoder  # noqa: E402
from llmref.finetune import (add_lora, dpo_loss, merge_lora, parameter_counts,  # noqa: E402
                             sequence_logprob, sft_loss)

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "finetune.json"
THREADS = 1  # on a shared 2-core machine one thread is steadier (and, busy, far faster) than two

PROMPT_CHARS, ANSWER_CHARS = 64, 40
TEMPLATE = ("### Text\n", "\n### Continue\n")
GPT_LORA = dict(r=8, alpha=16.0, targets=("c_attn", "c_proj", "c_fc"))
SFT = dict(steps=120, batch_size=16, lr=2e-3, eval_every=20)
DPO = dict(steps=60, batch_size=16, lr=1e-3, beta=0.1, eval_every=10)
N_TRAIN_PAIRS, N_HELD_OUT_PAIRS = 2000, 100

MODULES = ("math", "os", "socket", "logging", "statistics", "inspect", "time", "shutil")
PER_MODULE = 40
MAX_TOKENS = 48
ENCODER_LORA = dict(r=8, alpha=16.0, targets=("query", "value"))
CLASSIFIER = dict(epochs=4, batch_size=16, lr=1e-3, head_lr=1e-2, probe_steps=300, probe_lr=1e-2)


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__}


# ============================================================================ (a) GPT: SFT, DPO

def make_examples(text: str, n: int, seed: int) -> list[dict]:
    """n (prompt, chosen, rejected) triples from `text`, each starting after a space."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        start = rng.randrange(0, len(text) - PROMPT_CHARS - ANSWER_CHARS - 1)
        start = text.find(" ", start) + 1
        if start <= 0 or start + PROMPT_CHARS + ANSWER_CHARS > len(text):
            continue
        prompt = text[start:start + PROMPT_CHARS]
        answer = text[start + PROMPT_CHARS:start + PROMPT_CHARS + ANSWER_CHARS]
        words = answer.split(" ")
        if len(words) < 4 or "\n" in answer:
            continue
        shuffled = words[:]
        for _ in range(10):
            rng.shuffle(shuffled)
            if shuffled != words:
                break
        rejected = " ".join(shuffled)
        if rejected == answer:
            continue
        out.append({"prompt": prompt, "chosen": answer, "rejected": rejected})
    return out


def encode_batch(tokenizer, prompts: list[str], answers: list[str], template: bool):
    """ids (B, L) padded on the right, targets = ids shifted, loss_mask on the answer."""
    rows, masks = [], []
    for prompt, answer in zip(prompts, answers):
        head = TEMPLATE[0] + prompt + TEMPLATE[1] if template else prompt
        ids = tokenizer.encode(head + answer).tolist()
        n_head = len(tokenizer.encode(head))
        rows.append(ids)
        masks.append([False] * (n_head - 1) + [True] * (len(ids) - n_head))  # aligned with ids[1:]
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length - 1, dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks)):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(m)] = torch.tensor(m)
    return ids[:, :-1], ids[:, 1:], mask


def answer_logps(model, tokenizer, prompts, answers, template=True) -> torch.Tensor:
    x, y, mask = encode_batch(tokenizer, prompts, answers, template)
    logits, _ = model(x)
    return sequence_logprob(logits, y, mask)


@torch.no_grad()
def held_out_answer_loss(model, tokenizer, pairs, template=True, batch_size=50) -> float:
    """Nats per character of the true answers of held-out pairs."""
    model.eval()
    total = 0.0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        total -= float(answer_logps(model, tokenizer, [p["prompt"] for p in chunk],
                                    [p["chosen"] for p in chunk], template).sum())
    return total / (len(pairs) * ANSWER_CHARS)


@torch.no_grad()
def pair_logps(model, tokenizer, pairs, batch_size=50) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        prompts = [p["prompt"] for p in chunk]
        chosen.append(answer_logps(model, tokenizer, prompts, [p["chosen"] for p in chunk]))
        rejected.append(answer_logps(model, tokenizer, prompts, [p["rejected"] for p in chunk]))
    return torch.cat(chosen), torch.cat(rejected)


def run_gpt() -> dict:
    loaded = course_model.load()
    tokenizer = loaded.tokenizer
    train_text, held_text = corpus.split()
    train_pairs = make_examples(train_text, N_TRAIN_PAIRS, seed=0)
    held_pairs = make_examples(held_text, N_HELD_OUT_PAIRS, seed=1)
    base = loaded.model
    total_params = parameter_counts(base)[1]
    result = {"examples": {"prompt_chars": PROMPT_CHARS, "answer_chars": ANSWER_CHARS,
                           "template": list(TEMPLATE), "train_pairs": len(train_pairs),
                           "held_out_pairs": len(held_pairs), "example": held_pairs[0]},
              "lora": {**GPT_LORA, "targets": list(GPT_LORA["targets"])}}

    # ---------------------------------------------------------------- SFT
    before_plain = held_out_answer_loss(base, tokenizer, held_pairs, template=False)
    before_template = held_out_answer_loss(base, tokenizer, held_pairs, template=True)
    model = copy.deepcopy(base)
    names = add_lora(model, GPT_LORA["r"], GPT_LORA["alpha"], GPT_LORA["targets"])
    trainable, total = parameter_counts(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=SFT["lr"],
                                  weight_decay=0.0)
    rng = random.Random(2)
    curve = {"step": [0], "held_out_nats_per_char": [before_template], "train_loss": []}
    start = time.perf_counter()
    for step in range(1, SFT["steps"] + 1):
        model.train()
        batch = rng.sample(train_pairs, SFT["batch_size"])
        x, y, mask = encode_batch(tokenizer, [p["prompt"] for p in batch], [p["chosen"] for p in batch], True)
        logits, _ = model(x)
        loss = sft_loss(logits, y, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve["train_loss"].append(loss.item())
        if step % SFT["eval_every"] == 0:
            curve["step"].append(step)
            curve["held_out_nats_per_char"].append(held_out_answer_loss(model, tokenizer, held_pairs))
    sft_seconds = time.perf_counter() - start
    result["sft"] = {**SFT, "adapted_layers": len(names), "trainable_parameters": trainable,
                     "total_parameters": total, "base_parameters": total_params,
                     "held_out_nats_per_char": {"pretrained_plain_continuation": before_plain,
                                                "pretrained_with_template": before_template,
                                                "after_sft_with_template": curve["held_out_nats_per_char"][-1]},
                     "curve": curve, "seconds": sft_seconds}
    print(f"SFT: {trainable:,} of {total:,} parameters train; held-out answer loss "
          f"{before_template:.3f} -> {curve['held_out_nats_per_char'][-1]:.3f} nats/char "
          f"(plain continuation {before_plain:.3f}), {sft_seconds:.0f} s")

    # ---------------------------------------------------------------- merge, then DPO
    merged = merge_lora(model)
    reference = model.eval().requires_grad_(False)
    policy = copy.deepcopy(reference)
    add_lora(policy, GPT_LORA["r"], GPT_LORA["alpha"], GPT_LORA["targets"])
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=DPO["lr"],
                                  weight_decay=0.0)
    ref_held_c, ref_held_r = pair_logps(reference, tokenizer, held_pairs)
    beta = DPO["beta"]
    curve = {"step": [], "held_out_margin": [], "held_out_reward_accuracy": [],
             "held_out_policy_prefers_chosen": [], "held_out_chosen_reward": [],
             "held_out_rejected_reward": [], "train_step": [], "train_margin": [], "train_loss": []}

    def evaluate(step: int) -> None:
        pol_c, pol_r = pair_logps(policy, tokenizer, held_pairs)
        chosen, rejected = beta * (pol_c - ref_held_c), beta * (pol_r - ref_held_r)
        curve["step"].append(step)
        curve["held_out_margin"].append(float((chosen - rejected).mean()))
        curve["held_out_reward_accuracy"].append(float((chosen > rejected).double().mean()))
        curve["held_out_policy_prefers_chosen"].append(float((pol_c > pol_r).double().mean()))
        curve["held_out_chosen_reward"].append(float(chosen.mean()))
        curve["held_out_rejected_reward"].append(float(rejected.mean()))

    evaluate(0)
    rng = random.Random(3)
    start = time.perf_counter()
    for step in range(1, DPO["steps"] + 1):
        policy.train()
        batch = rng.sample(train_pairs, DPO["batch_size"])
        prompts = [p["prompt"] for p in batch]
        with torch.no_grad():
            ref_c = answer_logps(reference, tokenizer, prompts, [p["chosen"] for p in batch])
            ref_r = answer_logps(reference, tokenizer, prompts, [p["rejected"] for p in batch])
        pol_c = answer_logps(policy, tokenizer, prompts, [p["chosen"] for p in batch])
        pol_r = answer_logps(policy, tokenizer, prompts, [p["rejected"] for p in batch])
        loss, chosen, rejected = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve["train_step"].append(step)
        curve["train_margin"].append(float((chosen - rejected).mean()))
        curve["train_loss"].append(loss.item())
        if step % DPO["eval_every"] == 0:
            evaluate(step)
    dpo_seconds = time.perf_counter() - start
    trainable, total = parameter_counts(policy)
    result["dpo"] = {**DPO, "merged_sft_layers": merged, "trainable_parameters": trainable,
                     "total_parameters": total, "curve": curve, "seconds": dpo_seconds,
                     "held_out_answer_nats_per_char_after": held_out_answer_loss(policy, tokenizer, held_pairs),
                     "reference_prefers_chosen": float((ref_held_c > ref_held_r).double().mean())}
    print(f"DPO: held-out margin {curve['held_out_margin'][0]:.3f} -> {curve['held_out_margin'][-1]:.3f}, "
          f"reward accuracy {curve['held_out_reward_accuracy'][-1]:.1%}, policy prefers chosen "
          f"{curve['held_out_policy_prefers_chosen'][0]:.1%} -> {curve['held_out_policy_prefers_chosen'][-1]:.1%}, "
          f"{dpo_seconds:.0f} s")
    return result


# ============================================================================ (b) encoder: which module

def docstring_examples() -> list[dict]:
    """(text, module, name) for the public functions and classes of MODULES, first paragraph of
    each docstring (signature lines dropped), at most PER_MODULE per module (by name order)."""
    out = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        found = []
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            lines = [line for line in doc.splitlines() if not line.startswith(name + "(")]
            paragraph = " ".join("\n".join(lines).strip().split("\n\n")[0].split())
            if len(paragraph) < 20:
                continue
            found.append({"text": paragraph, "module": module_name, "name": name})
        out.extend(found[:PER_MODULE])
    return out


def split_examples(examples):
    """70/30 by a hash of module.name: the same split on every run and machine."""
    train, test = [], []
    for e in examples:
        (test if zlib.crc32(f"{e['module']}.{e['name']}".encode()) % 10 < 3 else train).append(e)
    return train, test


def pooled(model: encoder.Encoder, batch: dict) -> torch.Tensor:
    hidden = model(batch["input_ids"], batch["attention_mask"])
    weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1)


@torch.no_grad()
def features(model, tokenizer, texts, batch_size=32) -> torch.Tensor:
    model.eval()
    return torch.cat([pooled(model, tokenizer.encode(texts[i:i + batch_size], max_length=MAX_TOKENS))
                      for i in range(0, len(texts), batch_size)])


def run_encoder() -> dict:
    folder = encoder.minilm_folder()
    tokenizer = encoder.WordPieceTokenizer.from_folder(folder)
    examples = docstring_examples()
    train, test = split_examples(examples)
    labels = {m: i for i, m in enumerate(MODULES)}
    y_train = torch.tensor([labels[e["module"]] for e in train])
    y_test = torch.tensor([labels[e["module"]] for e in test])
    counts = {m: sum(e["module"] == m for e in examples) for m in MODULES}
    majority = max(float((y_test == k).double().mean()) for k in range(len(MODULES)))
    result = {"modules": list(MODULES), "per_module": counts, "train": len(train), "test": len(test),
              "max_tokens": MAX_TOKENS, "chance": 1 / len(MODULES), "majority_class": majority,
              "example": test[0]}

    # ---------------------------------------------------------------- the linear probe
    base = encoder.load_encoder(folder)
    start = time.perf_counter()
    f_train = features(base, tokenizer, [e["text"] for e in train])
    f_test = features(base, tokenizer, [e["text"] for e in test])
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    torch.manual_seed(0)
    probe = nn.Linear(f_train.shape[1], len(MODULES))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=CLASSIFIER["probe_lr"], weight_decay=0.01)
    for _ in range(CLASSIFIER["probe_steps"]):
        loss = F.cross_entropy(probe((f_train - mean) / std), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probe_accuracy = float((probe((f_test - mean) / std).argmax(1) == y_test).double().mean())
    result["linear_probe"] = {"test_accuracy": probe_accuracy, "seconds": time.perf_counter() - start,
                              "trainable_parameters": sum(p.numel() for p in probe.parameters()),
                              "steps": CLASSIFIER["probe_steps"]}
    print(f"linear probe on the frozen encoder: {probe_accuracy:.1%} held out")

    # ---------------------------------------------------------------- LoRA + head
    torch.manual_seed(0)
    model = encoder.load_encoder(folder)
    add_lora(model, ENCODER_LORA["r"], ENCODER_LORA["alpha"], ENCODER_LORA["targets"])
    head = nn.Linear(model.config.hidden_size, len(MODULES))
    adapters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": adapters, "lr": CLASSIFIER["lr"]},
                                   {"params": head.parameters(), "lr": CLASSIFIER["head_lr"]}],
                                  weight_decay=0.0)
    trainable = sum(p.numel() for p in adapters) + sum(p.numel() for p in head.parameters())
    total = parameter_counts(model)[1] + sum(p.numel() for p in head.parameters())
    curve = {"epoch": [], "train_loss": [], "test_accuracy": []}
    rng = random.Random(4)
    start = time.perf_counter()
    steps = 0
    for epoch in range(1, CLASSIFIER["epochs"] + 1):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        losses = []
        for i in range(0, len(order), CLASSIFIER["batch_size"]):
            chunk = order[i:i + CLASSIFIER["batch_size"]]
            batch = tokenizer.encode([train[j]["text"] for j in chunk], max_length=MAX_TOKENS)
            loss = F.cross_entropy(head(pooled(model, batch)), y_train[chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
        with torch.no_grad():
            accuracy = float((head(features(model, tokenizer, [e["text"] for e in test])).argmax(1)
                              == y_test).double().mean())
        curve["epoch"].append(epoch)
        curve["train_loss"].append(sum(losses) / len(losses))
        curve["test_accuracy"].append(accuracy)
        print(f"  epoch {epoch}: train loss {curve['train_loss'][-1]:.3f}, held-out accuracy {accuracy:.1%}")
    result["lora"] = {**ENCODER_LORA, "targets": list(ENCODER_LORA["targets"]), **CLASSIFIER,
                      "steps": steps, "test_accuracy": curve["test_accuracy"][-1], "curve": curve,
                      "seconds": time.perf_counter() - start, "trainable_parameters": trainable,
                      "total_parameters": total}
    print(f"LoRA + head: {curve['test_accuracy'][-1]:.1%} held out ({trainable:,} of {total:,} "
          f"parameters train), {result['lora']['seconds']:.0f} s")
    return result


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    start = time.perf_counter()
    gpt = run_gpt()
    enc = run_encoder()
    record = {"command": ".venv/bin/python benchmarks/finetune.py", "machine": machine(),
              "gpt": gpt, "encoder": enc, "seconds": time.perf_counter() - start}
    RESULT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)} in {record['seconds']:.0f} s")


if __name__ == "__main__":
    main()

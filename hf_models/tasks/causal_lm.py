"""The causal language modelling task: text from a local file or a Hub dataset through `datasets`, a tokenizer from
`tokenizers`, packed blocks, loss / perplexity / bits per character, generated samples, `text-generation`."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import load_dataset
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, TrainerCallback, set_seed

from ..data import bpe_tokenizer, char_tokenizer, gpt2_tokenizer, load_text_files, load_text_splits, pack_blocks
from ..data.sources import hub_dataset_of
from ..training.arguments import RUN_CONFIG_NAME, check_files, resolve_path
from .base import Task, saved_folder


SAMPLES_NAME = "samples.jsonl"
SAMPLE_SEED = 1234
DEFAULT_PROMPT = "\n"  # a run without its own sample_prompt

USAGE = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

repo_id = "{repo_id}"
prompt = "{prompt}"
model = AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(repo_id)
inputs = tokenizer(prompt, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens={tokens}, do_sample=True, top_k=40)
print(tokenizer.decode(output[0]))
```

```python
from transformers import pipeline

repo_id = "{repo_id}"
prompt = "{prompt}"
generator = pipeline("text-generation", model=repo_id, trust_remote_code=True)
print(generator(prompt, max_new_tokens={tokens})[0]["generated_text"])
```
"""


TOKENIZERS = ("char", "bpe", "gpt2")


@dataclass
class CausalLmDataArguments:
    """The `data:` section of a causal LM run."""

    corpus: str | None = field(default=None, metadata={"help": "a local text file"})
    validation_file: str | None = field(
        default=None, metadata={"help": "a local held-out text file (then all of `corpus` trains)"}
    )
    dataset: str | None = field(default=None, metadata={"help": "a Hub dataset id with a 'text' column"})
    dataset_config: str | None = field(default=None, metadata={"help": "the Hub dataset's configuration name"})
    val_fraction: float = field(default=0.1, metadata={"help": "held-out share of a single text file"})
    tokenizer: str = field(default="char", metadata={"help": "char | bpe | gpt2 (GPT-2's encoding via tiktoken)"})
    bpe_vocab_size: int = field(default=1024, metadata={"help": "vocabulary size of the byte-level BPE"})
    tiktoken_file: str | None = field(
        default=None, metadata={"help": "tokenizer gpt2: a local r50k_base.tiktoken (else tiktoken's cache)"}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "processes for tokenising with datasets.map (line-based corpora)"}
    )
    block_size: int = field(default=256, metadata={"help": "tokens per training block"})
    max_eval_blocks: int = field(default=256, metadata={"help": "validation blocks used during training (0 = all)"})


@torch.no_grad()
def generate_sample(model, tokenizer, prompt, max_new_tokens, seed=SAMPLE_SEED):
    """`prompt` + `max_new_tokens` sampled tokens (top-k 40, temperature 0.8), decoded. The sampling draws from a
    forked RNG seeded with `seed`: the same model gives the same sample, and the training randomness is untouched.
    The continuation stops where the model's positions (`max_position_embeddings`) end."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None:
        max_new_tokens = max(0, min(max_new_tokens, limit - inputs["input_ids"].shape[1]))
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                top_k=40,
                temperature=0.8,
                pad_token_id=tokenizer.pad_token_id,
            )
    finally:
        model.train(was_training)
    return tokenizer.decode(output[0], skip_special_tokens=True)


class SampleCallback(TrainerCallback):
    """After every evaluation and at the end of training, generate a sample (`generate_sample`) from
    `sample_prompt`, print it and append {step, prompt, text} to samples.jsonl in the run folder (main process).
    A step that already has its sample (an evaluation at the last step) is not sampled again."""

    def __init__(self, tokenizer, prompt, max_new_tokens, output_dir):
        self.tokenizer, self.prompt, self.max_new_tokens = tokenizer, prompt, max_new_tokens
        self.path = Path(output_dir) / SAMPLES_NAME
        self.last_step = None

    def _sample(self, state, model):
        if model is None or state.global_step == self.last_step:
            return
        self.last_step = state.global_step
        # every process generates (a sharded FSDP / ZeRO-3 model needs them all in its forward); the same seed gives
        # them the same text, and the main process records it
        text = generate_sample(model, self.tokenizer, self.prompt, self.max_new_tokens)
        if not state.is_world_process_zero:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": state.global_step, "prompt": self.prompt, "text": text}) + "\n")
        tqdm.write(f"[sample at step {state.global_step}]\n{text}\n")

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._sample(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._sample(state, model)


def last_sample(folder):
    """The newest entry of `folder`/samples.jsonl, or None."""
    path = Path(folder) / SAMPLES_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else None


def load_splits(data_args):
    """`DatasetDict` with `train` and `validation` text: a local file (split by characters), a local train file with
    a held-out file (one row per line), or a Hub dataset."""
    if data_args.corpus is not None and data_args.validation_file is not None:
        return load_text_files(
            resolve_path(data_args.corpus),
            resolve_path(data_args.validation_file),
            num_proc=data_args.preprocessing_num_workers,
        )
    if data_args.corpus is not None:
        return load_text_splits(resolve_path(data_args.corpus), data_args.val_fraction)
    splits = load_dataset(data_args.dataset, data_args.dataset_config, num_proc=data_args.preprocessing_num_workers)
    if "validation" not in splits:
        raise ValueError(f"dataset {data_args.dataset!r} has no 'validation' split (splits: {list(splits)})")
    return splits


def build_tokenizer(data_args, splits, output_dir):
    """The run's tokenizer: the one already saved in `output_dir` (resume), else a new one trained on `train`."""
    if (Path(output_dir) / "tokenizer.json").exists():
        try:
            return AutoTokenizer.from_pretrained(output_dir)
        except Exception as error:  # a damaged file raises anything from JSON to Rust errors
            raise ValueError(
                f"the run's tokenizer in {output_dir} (tokenizer.json) cannot be loaded: {error}"
            ) from None
    if data_args.tokenizer == "gpt2":
        return gpt2_tokenizer(resolve_path(data_args.tiktoken_file) if data_args.tiktoken_file else None)
    texts = list(splits["train"]["text"])
    if data_args.tokenizer == "char":
        return char_tokenizer(texts + list(splits["validation"]["text"]))
    return bpe_tokenizer(texts, data_args.bpe_vocab_size)


@torch.no_grad()
def evaluate_lm(model, tokenizer, blocks, batch_size=16):
    """Validation loss (nats per token), perplexity and bits per character over `blocks` (a `pack_blocks` dataset).

    Bits per character divide the total loss by the characters the predicted tokens decode to, so char and BPE
    models compare on the same scale.
    """
    blocks = blocks["input_ids"]  # a `pack_blocks` dataset of the held-out text
    model.eval()
    device = next(model.parameters()).device
    total_nats, total_tokens, total_chars = 0.0, 0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.tensor(blocks[start : start + batch_size], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        targets = ids[:, 1:]
        nats = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total_nats += float(nats)
        total_tokens += targets.numel()
        total_chars += sum(len(text) for text in tokenizer.batch_decode(targets.tolist()))
    loss = total_nats / total_tokens
    return {
        "eval_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_character": total_nats / (total_chars * math.log(2)),
        "eval_tokens": total_tokens,
        "eval_characters": total_chars,
    }


class CausalLmTask(Task):
    name = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    architecture_suffix = "ForCausalLM"
    pipeline_tag = "text-generation"
    loss_label = "loss (nats/token)"
    data_arguments = CausalLmDataArguments
    evaluate_options = {
        "corpus": "causal LMs: a held-out text file (default: the run's own validation split)",
        "block_size": "causal LMs: tokens per evaluated block (default: the run's)",
    }

    def check_data(self, data_args):
        if data_args.tokenizer not in TOKENIZERS:
            raise ValueError(f"data.tokenizer={data_args.tokenizer!r} is invalid: must be one of {TOKENIZERS}")
        if (data_args.corpus is None) == (data_args.dataset is None):
            raise ValueError("data needs exactly one of corpus (a local text file) or dataset (a Hub dataset id)")
        if data_args.validation_file is not None and data_args.corpus is None:
            raise ValueError("data.validation_file goes with data.corpus (a Hub dataset brings its own split)")
        workers = data_args.preprocessing_num_workers
        if workers is not None and workers < 1:
            raise ValueError(f"data.preprocessing_num_workers={workers} is invalid: must be >= 1")
        check_files({"data.corpus": data_args.corpus, "data.validation_file": data_args.validation_file,
                     "data.tiktoken_file": data_args.tiktoken_file})  # fmt: skip
        if data_args.block_size < 2:  # a block predicts its tokens 2..n from 1..n-1
            raise ValueError(f"data.block_size={data_args.block_size} is invalid: must be >= 2 tokens")
        if data_args.max_eval_blocks < 0:
            raise ValueError(f"data.max_eval_blocks={data_args.max_eval_blocks} is invalid: must be >= 0 (0 = all)")
        if data_args.corpus is not None and data_args.validation_file is None:
            if not 0 < data_args.val_fraction < 1:  # also refuses NaN
                raise ValueError(f"data.val_fraction={data_args.val_fraction} is invalid: must be in (0, 1)")

    def train(self, model_args, data_args, training_args, run):
        splits = load_splits(data_args)
        tokenizer = build_tokenizer(data_args, splits, run.output_dir)
        workers = data_args.preprocessing_num_workers
        train_blocks = pack_blocks(splits["train"], tokenizer, data_args.block_size, num_proc=workers)
        all_eval_blocks = pack_blocks(splits["validation"], tokenizer, data_args.block_size, num_proc=workers)
        eval_blocks = all_eval_blocks
        if data_args.max_eval_blocks and len(eval_blocks) > data_args.max_eval_blocks:
            eval_blocks = eval_blocks.select(range(data_args.max_eval_blocks))
        set_seed(training_args.seed)  # the initial weights are part of the run (Trainer only seeds its own loop)
        config = run.model_config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and data_args.block_size > limit:
            raise ValueError(
                f"data.block_size={data_args.block_size} is longer than the model's max_position_embeddings={limit}"
            )
        model = AutoModelForCausalLM.from_config(config)
        callbacks = list(run.callbacks)
        if training_args.sample_max_new_tokens > 0:
            callbacks.append(SampleCallback(tokenizer, training_args.sample_prompt,
                                            training_args.sample_max_new_tokens, run.output_dir))  # fmt: skip
        trainer = run.trainer(
            tokenizer,
            model=model,
            train_dataset=train_blocks,
            eval_dataset=eval_blocks if training_args.eval_strategy != "no" else None,
            callbacks=callbacks,
        )
        if not trainer.is_world_process_zero():
            return None
        return evaluate_lm(
            trainer.model, tokenizer, all_eval_blocks, batch_size=training_args.per_device_eval_batch_size
        )

    def own_data(self, data, options):
        corpus = options.get("corpus")
        if corpus is not None:
            own = data.get("validation_file")
            if own is None or resolve_path(corpus).resolve() != resolve_path(own).resolve():
                return False
        block_size = options.get("block_size")
        return block_size is None or block_size == data.get("block_size")

    def evaluate_folder(self, folder, data, options, batch_size, recorded):
        corpus, block_size = options.get("corpus"), options.get("block_size")
        held_out = corpus if corpus is not None else data.get("validation_file")
        run_config = RUN_CONFIG_NAME
        if held_out is not None and not resolve_path(held_out).is_file():
            origin = "--corpus" if corpus is not None else f"the run's data.validation_file (in {run_config})"
            raise ValueError(f"{origin} {held_out}: file not found")
        if held_out is None and data.get("corpus") and not resolve_path(data["corpus"]).is_file():
            raise ValueError(
                f"the run's data.corpus (in {run_config}) {data['corpus']}: file not found; pass --corpus"
            )
        if held_out is not None:  # an explicit held-out file is evaluated whole
            text = load_dataset("text", data_files=str(resolve_path(held_out)), sample_by="document", split="train")
        elif data.get("corpus"):  # the run's own validation split
            text = load_text_splits(resolve_path(data["corpus"]), data.get("val_fraction", 0.1))["validation"]
        else:
            raise ValueError(
                f"{folder} has no {run_config} naming its corpus; pass --corpus with a held-out text file"
            )
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        block_size = block_size or data.get("block_size") or model.config.max_position_embeddings
        return evaluate_lm(model, tokenizer, pack_blocks(text, tokenizer, block_size), batch_size)

    def load_preprocessor(self, source, run_dir):
        return AutoTokenizer.from_pretrained(saved_folder(source, run_dir, "tokenizer.json"))

    def prepare_export(self, model, preprocessor, training):
        model.generation_config = GenerationConfig(
            pad_token_id=preprocessor.pad_token_id,
            bos_token_id=preprocessor.bos_token_id,
            eos_token_id=preprocessor.eos_token_id,
            max_length=getattr(model.config, "max_position_embeddings", None),
            do_sample=True,
            top_k=40,
            temperature=0.8,
        )

    def run_pipeline(self, folder, inputs, max_new_tokens=200, seed=0, sample=True, timeout=600):
        """`inputs`: the prompt; the outputs: the generated text (prompt included)."""
        from ..hub.remote_code import run_isolated_pipeline

        text, module = run_isolated_pipeline(folder, inputs, max_new_tokens, seed=seed, sample=sample, timeout=timeout)
        return text, {"model_module": module}

    def export_sample(self, run_dir):
        return last_sample(run_dir)

    def card_fields(self, model, preprocessor, data, training, results):
        dataset_name = Path(data["corpus"]).stem if data.get("corpus") else data.get("dataset", "unknown")
        held_out = (
            f"the held-out file {Path(data['validation_file']).name}"
            if data.get("validation_file")
            else f"the last {data.get('val_fraction')} of the text"
            if data.get("corpus")
            else "its validation split"
        )
        # the usage snippets start from the prompt the run sampled from (its corpus's kind of text), and run as
        # written: prompt + new tokens stay within the model's positions
        prompt = training.get("sample_prompt") or DEFAULT_PROMPT
        limit = getattr(model.config, "max_position_embeddings", 10**9)
        tokens = min(60, limit - len(preprocessor(prompt)["input_ids"]))
        return {
            "dataset_name": dataset_name,
            "dataset_type": data.get("dataset") or dataset_name,
            # the card's `datasets:` links the Hub dataset: the run's own, or the one a local corpus is a copy of
            "hub_dataset": data.get("dataset")
            or (hub_dataset_of(resolve_path(data["corpus"])) if data.get("corpus") else None),
            "split": "validation",
            "metrics": [
                ("loss", "Validation loss (nats/token)", results["eval_loss"]),
                ("perplexity", "Perplexity", results["perplexity"]),
                ("bits_per_character", "Bits per character", results["bits_per_character"]),
            ],  # fmt: skip
            "data_description": f"{dataset_name} ({data.get('tokenizer')} tokens, validation = {held_out})",
            "preprocessing_description": f"Tokenizer: {data.get('tokenizer')}, {len(preprocessor)} entries",
            "batch_unit": f"x {data.get('block_size')} tokens",
            "usage": USAGE.replace("{prompt}", json.dumps(prompt)[1:-1]).replace("{tokens}", str(tokens)),
        }

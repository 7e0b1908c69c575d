"""`hf-models chat`: interactive generation from an exported (or saved) text model."""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def chat(folder, max_new_tokens=200, temperature=0.8, top_k=40, stream_in=None, stream_out=None):
    """Read prompts line by line (an empty line or end of input stops) and print a continuation of each. The model
    is loaded as remote code, as a user without hf_models would load it."""
    stream_in = stream_in or sys.stdin
    stream_out = stream_out or sys.stdout
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    limit = getattr(model.config, "max_position_embeddings", None)
    interactive = stream_in.isatty()
    while True:
        if interactive:
            stream_out.write("prompt> ")
            stream_out.flush()
        line = stream_in.readline()
        if not line or not line.strip():
            return
        prompt = line.rstrip("\n").replace("\\n", "\n")  # type \n for a line break
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        budget = max_new_tokens if limit is None else min(max_new_tokens, limit - ids.shape[1])
        if budget <= 0:
            stream_out.write(f"(the prompt has {ids.shape[1]} tokens; this model reads at most {limit})\n")
            continue
        with torch.no_grad():
            output = model.generate(ids, max_new_tokens=budget, do_sample=True, temperature=temperature, top_k=top_k)
        stream_out.write(tokenizer.decode(output[0], skip_special_tokens=True) + "\n")
        stream_out.flush()

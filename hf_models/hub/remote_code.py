"""Checks that a saved model folder works as Hub remote code.

Two checks, both used by the test battery and by `hf-models audit`:

* `audit_folder` / `audit_source`: a static audit of every shipped `.py` file. The Hub loader copies only the files
  that `from .X import ...` lines reach in the same folder, and a user who loads with `trust_remote_code=True` has
  torch and transformers, nothing else. So a shipped file may import the standard library, torch, transformers and
  safetensors; other packages only inside `try/except ImportError`; local code only as single-dot, flat relative
  imports of files that exist; and it must not print, read the environment or compile at import.
* `run_isolated`: loads the folder with `AutoModel*.from_pretrained(folder, trust_remote_code=True)` in a child
  process that cannot import hf_models (`python -I`, another working directory, `HF_HUB_OFFLINE=1`, a fresh
  modules cache, `sys.modules["hf_models"] = None`), runs the model on saved inputs and returns its outputs.
"""

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .capabilities import pickle_files, scan_source


# an export is written into `<target>.partial`, holding this marker until complete (see hub/export.py)
PARTIAL_SUFFIX = ".partial"
IN_PROGRESS_NAME = ".export-in-progress"


ALLOWED_IMPORTS = frozenset({"torch", "transformers", "safetensors"})
_FORBIDDEN_CALLS = {"print", "breakpoint", "input"}
# Trainer's own resume state in a checkpoint folder (optimizer, scheduler, RNG, arguments): never model weights.
_TRAINER_STATE = re.compile(r"^(optimizer|scheduler|scaler|training_args|rng_state(_\d+)?)\.(pt|pth|bin)$")


def _is_import_error_guard(node):
    """True for a `try:` whose handlers catch ImportError/ModuleNotFoundError (an optional fast path)."""
    for handler in node.handlers:
        names = []
        if handler.type is None:
            continue
        if isinstance(handler.type, ast.Tuple):
            names = [getattr(elt, "id", None) for elt in handler.type.elts]
        else:
            names = [getattr(handler.type, "id", None)]
        if {"ImportError", "ModuleNotFoundError"} & set(names):
            return True
    return False


def _import_time_nodes(tree):
    """ids of the nodes Python evaluates when the module is imported: everything but function bodies (decorators and
    default values of a `def` do run at import; class bodies run at import)."""
    ids = set()

    def visit(node):
        ids.add(id(node))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for decorator in getattr(node, "decorator_list", []):
                visit(decorator)
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                visit(default)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return ids


def audit_source(source, filename, folder_files):
    """Problems (strings) of one shipped file; `folder_files` is the set of file names beside it."""
    problems = []
    tree = ast.parse(source, filename=filename)
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and _is_import_error_guard(node):
            for inner in node.body:
                for sub in ast.walk(inner):
                    guarded.add(id(sub))
    stdlib = set(sys.stdlib_module_names)
    at_import = _import_time_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top not in stdlib and top not in ALLOWED_IMPORTS and id(node) not in guarded:
                    problems.append(
                        f"{filename}:{node.lineno}: imports '{alias.name}' (only stdlib, torch, transformers, safetensors)"
                    )
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")[0]
                if top not in stdlib and top not in ALLOWED_IMPORTS and id(node) not in guarded:
                    problems.append(
                        f"{filename}:{node.lineno}: imports from '{node.module}' (only stdlib, torch, transformers, safetensors)"
                    )
            elif node.level != 1:
                problems.append(
                    f"{filename}:{node.lineno}: relative import with {node.level} dots (only single-dot imports are copied to the Hub)"
                )
            elif not node.module:
                problems.append(
                    f"{filename}:{node.lineno}: 'from . import ...' is not followed by the Hub loader; use 'from .module import name'"
                )
            elif "." in node.module:
                problems.append(
                    f"{filename}:{node.lineno}: relative import of a sub-package '{node.module}' (the shipped folder is flat)"
                )
            elif f"{node.module}.py" not in folder_files:
                problems.append(
                    f"{filename}:{node.lineno}: relative import '.{node.module}' has no {node.module}.py in the folder"
                )
        elif isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if isinstance(func, ast.Name) and name in _FORBIDDEN_CALLS:
                problems.append(
                    f"{filename}:{node.lineno}: calls {name}() (no output or interaction from shipped code)"
                )
            if name in {"getenv", "putenv"} and id(node) in at_import:
                problems.append(f"{filename}:{node.lineno}: reads the environment ({name}) at import")
        elif isinstance(node, ast.Attribute) and node.attr == "environ" and id(node) in at_import:
            problems.append(f"{filename}:{node.lineno}: reads os.environ at import")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "compile"
            and getattr(node.value, "id", None) == "torch"
            and id(node) in at_import
        ):  # a call or a decorator that runs at import; a compile inside a function runs only when it is called
            problems.append(
                f"{filename}:{node.lineno}: uses torch.compile at import (no compilation at import or load)"
            )
    return problems


def relative_imports(path):
    """Module names imported as `from .X import ...` by the file at `path`."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }


def shipped_files(folder, entry_points):
    """The transitive closure of `from .X import` starting at `entry_points` (file names) inside `folder`."""
    folder = Path(folder)
    todo, seen = list(entry_points), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if (folder / name).exists():
            todo.extend(f"{module}.py" for module in relative_imports(folder / name))
    return sorted(seen)


def audit_folder(folder, required_auto_classes=(), staging=False):
    """Problems of a saved model folder: every `.py` file audited (the shipped-file rules, and what its code can do:
    `capabilities.REFUSED` kinds are problems); `auto_map` complete and pointing at files; no pickle files; not an
    unfinished export (`staging=True`: the export's own check of its `.partial` folder before the rename)."""
    folder = Path(folder)
    problems = []
    if not staging and folder.name.endswith(PARTIAL_SUFFIX):
        problems.append(f"{folder} is an unfinished export ({PARTIAL_SUFFIX} folder): export again, or use the folder "
                        f"without {PARTIAL_SUFFIX} once an export has completed")  # fmt: skip
    if (folder / IN_PROGRESS_NAME).exists():
        problems.append(f"{folder} holds {IN_PROGRESS_NAME}: an export into it was interrupted or is still running")
    files = {p.name for p in folder.iterdir() if p.is_file()}
    for name in sorted(f for f in files if f.endswith(".py")):
        source = (folder / name).read_text(encoding="utf-8")
        problems += audit_source(source, name, files)
        problems += [f"{finding.file}:{finding.line}: {finding.kind}: {finding.detail}"
                     for finding in scan_source(source, name) if finding.refused]  # fmt: skip
    config_path = folder / "config.json"
    if not config_path.exists():
        return problems + ["config.json is missing"]
    auto_map = json.loads(config_path.read_text(encoding="utf-8")).get("auto_map") or {}
    for auto_class in ("AutoConfig", *required_auto_classes):
        if auto_class not in auto_map:
            problems.append(f"config.json auto_map lacks {auto_class}")
    for auto_class, reference in auto_map.items():
        module = reference.split("--")[-1].rsplit(".", 1)[0]
        if f"{module}.py" not in files:
            problems.append(f"auto_map[{auto_class!r}] = {reference!r} but {module}.py is not in the folder")
    pickles = pickle_files(folder, ignore=_TRAINER_STATE.match)
    if pickles:
        problems.append(
            f"the folder holds pickled data {pickles}; only safetensors are allowed (unpickling runs code)"
        )
    if not any(name.endswith(".safetensors") or name.endswith(".safetensors.index.json") for name in files):
        problems.append("the folder has no safetensors weights")
    return problems


_CHILD = r"""
import sys
sys.modules["hf_models"] = None  # the package under test must not be importable here
import json
import torch
import transformers
from safetensors.torch import load_file, save_file

folder, auto_class, inputs_path, out_path, threads, max_new_tokens = sys.argv[1:7]
torch.manual_seed(0)
torch.set_num_threads(int(threads))
model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True)
model.eval()
inputs = load_file(inputs_path)
with torch.no_grad():
    output = model(**inputs)
result = {k: v.detach().clone().contiguous() for k, v in output.items() if isinstance(v, torch.Tensor)}
if int(max_new_tokens) > 0:
    gen_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    result["generated"] = model.generate(**gen_inputs, max_new_tokens=int(max_new_tokens), do_sample=False)
save_file(result, out_path)
loaded = sorted(
    name for name, module in sys.modules.items()
    if module is not None and (name == "hf_models" or name.startswith("hf_models."))
)
print(json.dumps({"model_module": type(model).__module__, "hf_models_modules": loaded}))
"""


_PIPELINE_CHILD = r"""
import sys
sys.modules["hf_models"] = None  # the package under test must not be importable here
import json
import transformers

folder, prompt, max_new_tokens, seed, sample = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
transformers.set_seed(seed)
generator = transformers.pipeline("text-generation", model=folder, trust_remote_code=True)
kwargs = {"do_sample": True, "temperature": 0.8, "top_k": 40} if sample == "1" else {"do_sample": False}
text = generator(prompt, max_new_tokens=max_new_tokens, **kwargs)[0]["generated_text"]
print(json.dumps({"text": text, "model_module": type(generator.model).__module__}))
"""


def _isolated_env(tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_MODULES_CACHE"))}
    env.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp / "modules"), "TRANSFORMERS_VERBOSITY": "error"})
    return env


def _run_child(tmp, source, args, what, timeout):
    """Run `source` as a script with `python -I` in the isolated environment of `tmp` (another working directory,
    offline, a fresh modules cache); returns the JSON object it prints last."""
    script = tmp / "child.py"
    script.write_text(source, encoding="utf-8")
    cwd = tmp / "cwd"
    cwd.mkdir(exist_ok=True)
    command = [sys.executable, "-I", str(script), *map(str, args)]
    proc = subprocess.run(command, cwd=cwd, env=_isolated_env(tmp), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_isolated_pipeline(folder, prompt, max_new_tokens=200, seed=0, sample=True, timeout=600):
    """`pipeline("text-generation", model=folder, trust_remote_code=True)` in a child process without hf_models;
    returns `(generated_text, model_module)`."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="hfm_isolated_") as tmp:
        tmp = Path(tmp)
        args = [folder, prompt, max_new_tokens, seed, "1" if sample else "0"]
        info = _run_child(tmp, _PIPELINE_CHILD, args, f"isolated pipeline on {folder}", timeout)
        return info["text"], info["model_module"]


_IMAGE_PIPELINE_CHILD = r"""
import sys
sys.modules["hf_models"] = None  # the package under test must not be importable here
import json
import transformers
from PIL import Image

folder, top_k, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
classifier = transformers.pipeline("image-classification", model=folder, trust_remote_code=True)
predictions = classifier([Image.open(path) for path in paths], top_k=top_k)
print(json.dumps({"predictions": predictions, "model_module": type(classifier.model).__module__,
                  "processor": type(classifier.image_processor).__name__}))
"""


def run_isolated_image_pipeline(folder, images, top_k=1, timeout=600):
    """`pipeline("image-classification", model=folder, trust_remote_code=True)` on PIL `images` in a child process
    without hf_models; returns `(predictions, info)`: per image a list of {label, score}, and the child's
    `model_module` and image processor class name."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="hfm_isolated_") as tmp:
        tmp = Path(tmp)
        paths = []
        for i, image in enumerate(images):
            paths.append(tmp / f"image_{i}.png")
            image.save(paths[-1])
        info = _run_child(
            tmp, _IMAGE_PIPELINE_CHILD, [folder, top_k, *paths], f"isolated image pipeline on {folder}", timeout
        )
        return info.pop("predictions"), info


_PROMPT_CHILD = r"""
import sys
sys.modules["hf_models"] = None  # the package under test must not be importable here
import json
import torch
import transformers

folder, prompts_path = sys.argv[1], sys.argv[2]
model = transformers.AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=True)
answers = []
for prompt in json.load(open(prompts_path, encoding="utf-8")):
    with torch.no_grad():
        logits = model(**processor(prompt["tables"], prompt["query"])).logits
    answers.extend(processor.post_process(logits))
print(json.dumps({"answers": answers, "model_module": type(model).__module__,
                  "processor": type(processor).__name__, "processor_module": type(processor).__module__}))
"""


def run_isolated_prompt_classifier(folder, prompts, timeout=600):
    """A prompt classifier and its processor loaded from `folder` with `trust_remote_code` (`AutoProcessor`) in a child
    process without hf_models, answering `prompts` ((tables, query) pairs) through the processor's `post_process`;
    returns `(answers, info)` with the child's model and processor modules."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="hfm_isolated_") as tmp:
        tmp = Path(tmp)
        path = tmp / "prompts.json"
        path.write_text(json.dumps([{"tables": t, "query": q} for t, q in prompts]), encoding="utf-8")
        info = _run_child(tmp, _PROMPT_CHILD, [folder, path], f"isolated prompt classifier on {folder}", timeout)
        return info.pop("answers"), info


_FORECAST_CHILD = r"""
import sys
sys.modules["hf_models"] = None  # the package under test must not be importable here
import json
import torch
import transformers

folder, series_path = sys.argv[1], sys.argv[2]
forecaster = transformers.pipeline(model=folder, trust_remote_code=True)
series = [torch.tensor(s) for s in json.load(open(series_path, encoding="utf-8"))]
forecasts = forecaster(series)
print(json.dumps({"forecasts": forecasts, "task": forecaster.task, "model_module": type(forecaster.model).__module__,
                  "pipeline": type(forecaster).__name__, "pipeline_module": type(forecaster).__module__}))
"""


def run_isolated_forecasting_pipeline(folder, series, timeout=600):
    """`pipeline(model=folder, trust_remote_code=True)` (the task from the config's `custom_pipelines`) in a child
    process without hf_models, forecasting each of `series` ((time, channels) values); returns `(forecasts, info)`
    with the child's task, pipeline class and model module."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="hfm_isolated_") as tmp:
        tmp = Path(tmp)
        path = tmp / "series.json"
        path.write_text(
            json.dumps([torch.as_tensor(s, dtype=torch.float32).tolist() for s in series]), encoding="utf-8"
        )
        info = _run_child(tmp, _FORECAST_CHILD, [folder, path], f"isolated forecasting pipeline on {folder}", timeout)
        return info.pop("forecasts"), info


def run_isolated(folder, auto_class, inputs, max_new_tokens=0, timeout=600):
    """Load `folder` with `transformers.<auto_class>.from_pretrained(..., trust_remote_code=True)` in a child process
    without hf_models, run it on `inputs` (a dict of tensors) and return `(outputs, info)`.

    `outputs` holds every tensor field of the model output (and `generated` when `max_new_tokens > 0`); `info` holds
    the child's `model_module` (the module its class came from) and the hf_models modules it saw (must be none).
    """
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="hfm_isolated_") as tmp:
        tmp = Path(tmp)
        inputs_path, out_path = tmp / "inputs.safetensors", tmp / "outputs.safetensors"
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(inputs_path))
        args = [folder, auto_class, inputs_path, out_path, torch.get_num_threads(), max_new_tokens]
        info = _run_child(tmp, _CHILD, args, f"isolated load of {folder}", timeout)
        return load_file(str(out_path)), info

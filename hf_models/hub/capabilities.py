"""What the code of a model folder can do when it runs: the security half of `hf-models audit`.

Loading a folder with `trust_remote_code=True` runs its `.py` files. Before that, `scan_source` reads each file's
syntax tree (nothing is imported or run) and reports every place that reaches outside the model, by kind:

| kind | what it finds | verdict |
|---|---|---|
| process | subprocess, os.system / popen / spawn* / exec* / fork, pty, multiprocessing, asyncio subprocesses | refused |
| dynamic-code | exec, eval, compile() of source, `__import__` / `importlib.import_module` of a computed name, `getattr` of a computed name on a module | refused |
| network | socket, urllib, http.client, requests, httpx, aiohttp, ftplib, smtplib, Hub downloads | refused |
| pickle | pickle / marshal / dill / joblib / cloudpickle loads, `torch.load` without `weights_only=True`, `numpy.load(allow_pickle=True)`; pickle files in the folder | refused |
| native-build | torch.utils.cpp_extension builds, ctypes / cffi libraries, `torch.ops.load_library`, importing a module from a file path | reported |
| file-write | open() for writing, os / shutil / tempfile file operations, Path write/unlink/mkdir/rename methods, file locks | reported |
| environment | os.environ, os.getenv / putenv / unsetenv | reported |

Refused kinds make the audit fail: no model needs them, and they are how hostile code acts. Reported kinds are what
legitimate model code can need (mHC builds its CPU kernels on first use, in torch's extension cache, under a file
lock, and reads one switch from the environment); the report names each place with its file, line and function, so
a reader can check them before trusting the folder. Names are resolved through imports and aliases (`import
subprocess as sp`, `from os import system as run`, `from subprocess import *`). A static scan cannot see through
every indirection, so a clean report is evidence, not proof.
"""

import ast
from dataclasses import asdict, dataclass
from pathlib import Path


REFUSED = ("process", "dynamic-code", "network", "pickle")
REPORTED = ("native-build", "file-write", "environment")
KINDS = REFUSED + REPORTED

# fully qualified names (or prefixes ending in ".") -> kind; the longest match wins
_CALLS = {
    "subprocess.": "process",
    "os.system": "process",
    "os.popen": "process",
    "os.fork": "process",
    "os.forkpty": "process",
    "os.posix_spawn": "process",
    "os.posix_spawnp": "process",
    "os.startfile": "process",
    "pty.": "process",
    "multiprocessing.": "process",
    "concurrent.futures.ProcessPoolExecutor": "process",
    "asyncio.create_subprocess_exec": "process",
    "asyncio.create_subprocess_shell": "process",
    "exec": "dynamic-code",
    "eval": "dynamic-code",
    "compile": "dynamic-code",
    "builtins.exec": "dynamic-code",
    "builtins.eval": "dynamic-code",
    "builtins.compile": "dynamic-code",
    "types.FunctionType": "dynamic-code",
    "types.CodeType": "dynamic-code",
    "socket.": "network",
    "urllib.request.": "network",
    "urllib3.": "network",
    "http.client.": "network",
    "requests.": "network",
    "httpx.": "network",
    "aiohttp.": "network",
    "ftplib.": "network",
    "smtplib.": "network",
    "telnetlib.": "network",
    "xmlrpc.client.": "network",
    "huggingface_hub.hf_hub_download": "network",
    "huggingface_hub.snapshot_download": "network",
    "transformers.utils.hub.cached_file": "network",
    "pickle.load": "pickle",
    "pickle.loads": "pickle",
    "pickle.Unpickler": "pickle",
    "_pickle.": "pickle",
    "marshal.load": "pickle",
    "marshal.loads": "pickle",
    "dill.": "pickle",
    "cloudpickle.": "pickle",
    "joblib.load": "pickle",
    "shelve.open": "pickle",
    "torch.utils.cpp_extension.": "native-build",
    "ctypes.": "native-build",
    "cffi.": "native-build",
    "torch.ops.load_library": "native-build",
    "importlib.util.spec_from_file_location": "native-build",
    "importlib.machinery.ExtensionFileLoader": "native-build",
    "importlib.machinery.SourceFileLoader": "native-build",
    "os.remove": "file-write",
    "os.unlink": "file-write",
    "os.rename": "file-write",
    "os.renames": "file-write",
    "os.replace": "file-write",
    "os.rmdir": "file-write",
    "os.removedirs": "file-write",
    "os.mkdir": "file-write",
    "os.makedirs": "file-write",
    "os.open": "file-write",
    "os.chmod": "file-write",
    "os.chown": "file-write",
    "os.symlink": "file-write",
    "os.link": "file-write",
    "os.truncate": "file-write",
    "os.write": "file-write",
    "shutil.": "file-write",
    "tempfile.": "file-write",
    "fcntl.flock": "file-write",
    "fcntl.lockf": "file-write",
    "msvcrt.locking": "file-write",
    "os.getenv": "environment",
    "os.putenv": "environment",
    "os.unsetenv": "environment",
}
# modules whose import alone says what the file can do
_MODULES = {
    "subprocess": "process",
    "pty": "process",
    "multiprocessing": "process",
    "socket": "network",
    "urllib.request": "network",
    "urllib3": "network",
    "http.client": "network",
    "requests": "network",
    "httpx": "network",
    "aiohttp": "network",
    "ftplib": "network",
    "smtplib": "network",
    "pickle": "pickle",
    "_pickle": "pickle",
    "marshal": "pickle",
    "dill": "pickle",
    "cloudpickle": "pickle",
    "joblib": "pickle",
    "ctypes": "native-build",
    "cffi": "native-build",
}
# method names that write files whatever object they are called on (pathlib.Path and friends)
_WRITING_METHODS = {"write_text", "write_bytes", "unlink", "mkdir", "rmdir", "rename", "replace", "touch", "chmod"}
_ENVIRONMENT_NAMES = {"os.environ", "os.environb", "posix.environ"}
# file extensions of pickled data, whatever the folder says they hold
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib", ".dill", ".npy", ".npz")


@dataclass(frozen=True)
class Finding:
    kind: str
    file: str
    line: int
    function: str  # the enclosing function ("<module>" at import time)
    detail: str  # the call or name, as written

    @property
    def refused(self):
        return self.kind in REFUSED

    def __str__(self):
        return f"{self.kind}: {self.file}:{self.line} in {self.function}: {self.detail}"

    def as_dict(self):
        return {**asdict(self), "refused": self.refused}


def _kind_of(qualified, table):
    """The kind of a fully qualified name: an exact entry, else the longest prefix entry ("subprocess.")."""
    if qualified in table:
        return table[qualified]
    best = None
    for key, kind in table.items():
        if key.endswith(".") and qualified.startswith(key) and (best is None or len(key) > len(best[0])):
            best = (key, kind)
    return best[1] if best else None


class _Scanner(ast.NodeVisitor):
    def __init__(self, filename):
        self.filename = filename
        self.aliases = {}  # local name -> fully qualified name
        self.star_modules = []  # modules imported with `from M import *`
        self.scope = []  # enclosing classes and functions
        self.findings = []

    def add(self, kind, node, detail):
        detail = " ".join(detail.split())
        detail = detail if len(detail) <= 120 else detail[:117] + "..."
        self.findings.append(Finding(kind, self.filename, node.lineno, ".".join(self.scope) or "<module>", detail))

    # scopes
    def _visit_scope(self, node):
        for decorator in getattr(node, "decorator_list", []):
            self.visit(decorator)
        self.scope.append(node.name)
        for child in node.body:
            self.visit(child)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_scope

    # imports
    def visit_Import(self, node):
        for alias in node.names:
            self.aliases[alias.asname or alias.name.split(".")[0]] = (
                alias.name if alias.asname else alias.name.split(".")[0]
            )
            kind = _kind_of(alias.name, _MODULES)
            if kind:
                self.add(kind, node, f"import {alias.name}")

    def visit_ImportFrom(self, node):
        if node.level:
            return
        module = node.module or ""
        module_kind = _kind_of(module, _MODULES)
        for alias in node.names:
            if alias.name == "*":
                self.star_modules.append(module)
                if module_kind:
                    self.add(module_kind, node, f"from {module} import *")
                continue
            qualified = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = qualified
            kind = _kind_of(qualified, _CALLS) or module_kind or _kind_of(qualified, _MODULES)
            if qualified in _ENVIRONMENT_NAMES:
                kind = "environment"
            if kind:
                self.add(kind, node, f"from {module} import {alias.name}")

    # names
    def qualify(self, node):
        """The fully qualified dotted name of a Name/Attribute chain, through the file's imports; None if unknown."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.aliases.get(node.id)
        if base is None:
            for module in self.star_modules:
                if _kind_of(f"{module}.{node.id}", _CALLS) or f"{module}.{node.id}" in _ENVIRONMENT_NAMES:
                    base = f"{module}.{node.id}"
                    break
            else:
                base = node.id  # a builtin or a local name
        return ".".join([base, *reversed(parts)])

    def visit_Attribute(self, node):
        if not isinstance(node.ctx, ast.Load):
            return self.generic_visit(node)
        qualified = self.qualify(node)
        if qualified in _ENVIRONMENT_NAMES:
            self.add("environment", node, ast.unparse(node))
            return None
        return self.generic_visit(node)

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and self.qualify(node) in _ENVIRONMENT_NAMES:
            self.add("environment", node, node.id)

    def visit_Call(self, node):
        qualified = self.qualify(node.func)
        source = ast.unparse(node)
        kind = None
        if qualified is not None:
            kind = _kind_of(qualified, _CALLS)
            if qualified.startswith("os.") and qualified[3:].startswith(("spawn", "exec")):
                kind = "process"
            if kind is None:
                kind = self._special_call(node, qualified)
        if kind is None and isinstance(node.func, ast.Attribute) and node.func.attr in _WRITING_METHODS:
            base = self.qualify(node.func.value)
            if not (base and base.split(".")[0] in ("torch", "math", "str")):  # tensor.rename, str.replace: not files
                if node.func.attr != "replace" or (base or "").startswith("os"):
                    kind = "file-write"
        if kind is None and isinstance(node.func, ast.Attribute) and node.func.attr == "exec_module":
            kind = "native-build"  # runs a module loaded from a file (spec.loader.exec_module)
        if kind:
            self.add(kind, node, source)
        self.generic_visit(node)

    def _special_call(self, node, qualified):
        """Calls whose kind depends on their arguments."""
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        constant_first = bool(node.args) and isinstance(node.args[0], ast.Constant)
        if qualified in ("__import__", "importlib.import_module", "importlib.__import__"):
            if constant_first:  # a fixed module: judged like an import of it
                return _kind_of(str(node.args[0].value), _MODULES)
            return "dynamic-code"
        if qualified in ("getattr", "builtins.getattr") and len(node.args) >= 2:
            target = self.qualify(node.args[0]) or ""
            if not isinstance(node.args[1], ast.Constant) and target.split(".")[0] in (
                "os", "builtins", "subprocess", "sys", "importlib", "posix", "__builtins__",
            ):  # fmt: skip
                return "dynamic-code"
            if isinstance(node.args[1], ast.Constant) and target in ("os", "builtins", "subprocess", "posix"):
                return _kind_of(f"{target}.{node.args[1].value}", _CALLS) or (
                    "dynamic-code" if node.args[1].value in ("exec", "eval", "compile", "system") else None
                )
        if qualified == "torch.load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                return "pickle"
        if qualified in ("numpy.load", "np.load"):
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                return "pickle"
        if qualified == "open" or qualified in ("io.open", "builtins.open", "codecs.open"):
            mode = node.args[1] if len(node.args) > 1 else keywords.get("mode")
            if mode is not None and not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
                return "file-write"  # a computed mode may write
            if mode is not None and set(mode.value) & set("wax+"):
                return "file-write"
        return None


def scan_source(source, filename):
    """The `Finding`s of one Python file's source (not run, not imported)."""
    scanner = _Scanner(filename)
    scanner.visit(ast.parse(source, filename=filename))
    return sorted(scanner.findings, key=lambda finding: (finding.line, finding.kind, finding.detail))


def _pickle_header(path):
    """True when the file starts like a pickle (protocol 2+ opcode) or a torch zip archive holding one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04"


def pickle_files(folder, ignore=lambda name: False):
    """Names of files in `folder` that hold pickled data, by extension or by their first bytes (`ignore`: names to
    leave out, e.g. Trainer's own resume state in a checkpoint)."""
    found = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or ignore(path.name) or path.suffix in (".py", ".json", ".md", ".txt", ".safetensors"):
            continue
        if path.name.endswith(_PICKLE_SUFFIXES) or _pickle_header(path):
            found.append(path.name)
    return found


def scan_folder(folder):
    """Every `Finding` of the `.py` files in `folder`, in file order."""
    findings = []
    for path in sorted(Path(folder).glob("*.py")):
        findings += scan_source(path.read_text(encoding="utf-8"), path.name)
    return findings


def render_report(findings, pickles=()):
    """The capability report as lines: per kind, refused first, each finding on its own line."""
    lines = []
    for kind in KINDS:
        found = [finding for finding in findings if finding.kind == kind]
        extra = [f"  {name} (pickled data)" for name in pickles] if kind == "pickle" else []
        if not found and not extra:
            continue
        verdict = "REFUSED" if kind in REFUSED else "reported"
        lines.append(f"{kind} ({verdict}):")
        lines += [f"  {finding.file}:{finding.line} in {finding.function}: {finding.detail}" for finding in found]
        lines += extra
    return lines

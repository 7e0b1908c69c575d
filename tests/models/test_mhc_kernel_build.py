"""Building the fused mHC CPU kernels on any host (`kernels_mhc.load()`): a build that a killed process left unfinished
never makes the next one wait; a live build is waited for up to a timeout; the first build says so once and a cached
load does not; `HF_MODELS_MHC_KERNELS=0` switches them off; the cache key carries the torch version; a missing cache
folder is created and an unwritable one replaced by a temporary folder; a failed build (no compiler) warns once with
the compiler's complaint and training runs on PyTorch ops.

Most tests replace `load_inline` with a stand-in that writes a fake library (a real build takes about 40 s on 2
cores); the lock tests use real child processes, and the no-compiler test and the `slow` kill test run real builds.
Every test builds under its own `TORCH_EXTENSIONS_DIR`, never in the user's cache. What the kernels compute is tested
in test_mhc_kernels.py."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch
from model_specs import CONFIGS
from torch.utils import cpp_extension

from hf_models.mhc import kernels_mhc, modeling_mhc, ops_mhc


TINY = CONFIGS / "mhc" / "tiny.json"


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """An unsettled loader building under tmp_path/extensions, with the switch unset and the warnings not yet given."""
    monkeypatch.setattr(kernels_mhc, "_STATE", {})
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.delenv(kernels_mhc.SWITCH, raising=False)
    modeling_mhc.logger.warning_once.cache_clear()
    yield
    modeling_mhc.logger.warning_once.cache_clear()


@pytest.fixture
def fake_build(monkeypatch):
    """`load_inline` and the import of a cached library replaced: a build writes a fake library into its build folder
    and is recorded with the torch `lock` files it found there; an import is recorded and returns a stand-in."""
    builds, imports = [], []

    def load_inline(name, build_directory, **kwargs):
        builds.append({"name": name, "folder": build_directory, "files": sorted(os.listdir(build_directory))})
        library = os.path.join(build_directory, name + ".so")
        Path(library).write_bytes(b"compiled")
        return types.SimpleNamespace(__name__=name, __file__=library)

    def import_library(name, path):
        imports.append(path)
        return types.SimpleNamespace(__name__=name, __file__=path)

    monkeypatch.setattr(cpp_extension, "load_inline", load_inline)
    monkeypatch.setattr(kernels_mhc, "_import_library", import_library)
    return types.SimpleNamespace(builds=builds, imports=imports)


def _cache(tmp_path):
    return tmp_path / "extensions" / kernels_mhc.extension_name()[0]


def _library(tmp_path):
    return _cache(tmp_path) / (kernels_mhc.extension_name()[0] + ".so")


def _messages(caplog, text):
    return [record.getMessage() for record in caplog.records if text in record.getMessage()]


def _reset():
    kernels_mhc._STATE.clear()


def test_the_first_build_says_so_once_and_is_cached_where_the_next_process_only_imports_it(
    fake_build, caplog, tmp_path
):
    with caplog.at_level(logging.INFO):
        module = kernels_mhc.load()
        assert kernels_mhc.load() is module  # settled: no second build
    assert len(fake_build.builds) == 1 and module.__name__ == kernels_mhc.extension_name()[0]
    build = fake_build.builds[0]
    assert Path(build["folder"]).parent == _cache(tmp_path) and Path(build["folder"]).name.startswith("build-")
    assert _library(tmp_path).read_bytes() == b"compiled"
    assert sorted(p.name for p in _cache(tmp_path).iterdir()) == ["build.lock", _library(tmp_path).name]
    building = _messages(caplog, "building the fused CPU kernels")
    assert len(building) == 1 and "about a minute" in building[0] and str(_cache(tmp_path)) in building[0]

    _reset()  # the next process
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert kernels_mhc.load() is not None
    assert len(fake_build.builds) == 1 and fake_build.imports == [str(_library(tmp_path))]
    assert _messages(caplog, "building") == []


def test_a_cached_library_that_does_not_load_is_rebuilt(fake_build, monkeypatch, caplog, tmp_path):
    _library(tmp_path).parent.mkdir(parents=True)
    _library(tmp_path).write_bytes(b"truncated")

    def import_library(name, path):
        if Path(path).read_bytes() == b"truncated":
            raise ImportError(f"{path}: file too short")
        return types.SimpleNamespace(__name__=name)

    monkeypatch.setattr(kernels_mhc, "_import_library", import_library)
    with caplog.at_level(logging.WARNING):
        assert kernels_mhc.load() is not None
    assert len(fake_build.builds) == 1 and _library(tmp_path).read_bytes() == b"compiled"
    (message,) = _messages(caplog, "building the fused CPU kernels")
    assert "did not load (ImportError" in message and "file too short" in message


def test_the_switch_turns_the_kernels_off_and_the_model_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(cpp_extension, "load_inline", lambda **kw: pytest.fail("built while switched off"))
    monkeypatch.setattr(ops_mhc._FusedRead, "apply", lambda *args: pytest.fail("the fused path ran while off"))
    monkeypatch.setenv("HF_MODELS_MHC_KERNELS", "0")
    assert kernels_mhc.load() is None
    assert kernels_mhc.disabled_by() == "HF_MODELS_MHC_KERNELS=0" and kernels_mhc.load_error() is None
    torch.manual_seed(0)
    config = modeling_mhc.MhcConfig.from_pretrained(str(TINY))
    model = modeling_mhc.MhcForCausalLM(config).train()
    config.hyper_connection_implementation = "eager"
    reference = modeling_mhc.MhcForCausalLM(config).train()
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(1, 64, (2, 12))
    with caplog.at_level(logging.WARNING):
        torch.manual_seed(5)
        loss = model(input_ids=ids, labels=ids).loss
        model(input_ids=ids, labels=ids)
    torch.manual_seed(5)
    torch.testing.assert_close(loss, reference(input_ids=ids, labels=ids).loss, rtol=0, atol=0)
    (message,) = _messages(caplog, "fused CPU kernels")
    assert "HF_MODELS_MHC_KERNELS=0 switches the fused CPU kernels off" in message
    assert "could not be built" not in message


@pytest.mark.parametrize("value", ["1", "", "true"])
def test_the_switch_on_or_unset_builds(fake_build, monkeypatch, value):
    monkeypatch.setenv("HF_MODELS_MHC_KERNELS", value)
    assert kernels_mhc.load() is not None and kernels_mhc.disabled_by() is None
    assert len(fake_build.builds) == 1


def test_an_invalid_switch_value_is_refused_by_name(fake_build, monkeypatch):
    monkeypatch.setenv("HF_MODELS_MHC_KERNELS", "maybe")
    with pytest.raises(ValueError, match="HF_MODELS_MHC_KERNELS='maybe' is invalid"):
        kernels_mhc.load()
    assert fake_build.builds == [] and "module" not in kernels_mhc._STATE


def test_the_cache_key_carries_the_torch_version(monkeypatch):
    name, flags = kernels_mhc.extension_name()
    version = torch.__version__.replace(".", "_").replace("+", "_")
    assert f"_torch{version}_" in name and name.isidentifier() and "-O3" in flags
    monkeypatch.setattr(torch, "__version__", "9.1.0a0+git1234")
    other, _ = kernels_mhc.extension_name()
    assert "_torch9_1_0a0_git1234_" in other and other.isidentifier()
    assert other.rsplit("_", 1)[1] != name.rsplit("_", 1)[1]  # the digest covers the version too
    monkeypatch.setattr(kernels_mhc, "_SOURCE", kernels_mhc._SOURCE + "\n// changed")
    assert kernels_mhc.extension_name()[0] != other


def test_a_missing_cache_folder_is_created(fake_build, monkeypatch, tmp_path):
    root = tmp_path / "not" / "there" / "yet"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(root))
    assert kernels_mhc.load() is not None
    assert (root / kernels_mhc.extension_name()[0] / _library(tmp_path).name).read_bytes() == b"compiled"


def test_a_cache_folder_that_cannot_be_created_builds_in_a_temporary_folder(fake_build, monkeypatch, caplog, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(blocker / "extensions"))
    with caplog.at_level(logging.WARNING):
        assert kernels_mhc.load() is not None
    (message,) = _messages(caplog, "fused CPU kernels")
    assert "temporary folder, for this process only" in message and "cannot be created" in message
    assert "TORCH_EXTENSIONS_DIR" in message
    folder = Path(fake_build.builds[0]["folder"])
    assert blocker not in folder.parents and not folder.exists()  # removed after the build was loaded


def test_a_read_only_cache_folder_builds_in_a_temporary_folder_or_loads_a_finished_build(
    fake_build, monkeypatch, caplog, tmp_path
):
    cache = _cache(tmp_path)
    cache.mkdir(parents=True)
    real_access = os.access
    # tests run as root, where chmod 0o555 stops nothing: the folder reports no write permission instead
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == cache else real_access(path, mode))
    with caplog.at_level(logging.WARNING):
        assert kernels_mhc.load() is not None
    (message,) = _messages(caplog, "fused CPU kernels")
    assert "temporary folder" in message and "not writable" in message and str(cache) in message
    assert cache not in Path(fake_build.builds[0]["folder"]).parents and list(cache.iterdir()) == []

    _reset()  # a read-only cache that holds a finished build: imported, nothing written
    caplog.clear()
    _library(tmp_path).write_bytes(b"compiled by the administrator")
    with caplog.at_level(logging.WARNING):
        assert kernels_mhc.load() is not None
    assert fake_build.imports == [str(_library(tmp_path))] and len(fake_build.builds) == 1
    assert _messages(caplog, "fused CPU kernels") == []


def test_a_cache_folder_without_file_locks_builds_in_a_temporary_folder(fake_build, monkeypatch, caplog, tmp_path):
    def no_locks(handle):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(kernels_mhc, "_lock_functions", lambda: (no_locks, None))
    with caplog.at_level(logging.WARNING):
        assert kernels_mhc.load() is not None
    (message,) = _messages(caplog, "fused CPU kernels")
    assert "temporary folder" in message and "cannot be locked" in message and "No locks available" in message
    assert _cache(tmp_path) not in Path(fake_build.builds[0]["folder"]).parents


def _hold_lock(cache, then="sleep"):
    """A child process that takes the build lock as a build does, starts a build folder with torch's `lock` file in
    it, says "locked" and then sleeps (to be killed) or, with then="finish", writes the library and exits."""
    fcntl = pytest.importorskip("fcntl")
    del fcntl
    script = textwrap.dedent(
        """
        import fcntl, os, sys, time
        cache, library, then = sys.argv[1:]
        os.makedirs(cache, exist_ok=True)
        handle = os.open(os.path.join(cache, "build.lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.makedirs(os.path.join(cache, "build-child"))
        open(os.path.join(cache, "build-child", "lock"), "w").close()
        print("locked", flush=True)
        if then == "finish":
            time.sleep(1.5)
            with open(library + ".tmp", "wb") as out:
                out.write(b"compiled by the other process")
            os.replace(library + ".tmp", library)
            import shutil
            shutil.rmtree(os.path.join(cache, "build-child"))
        else:
            time.sleep(600)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(cache), str(cache / (cache.name + ".so")), then],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_build_killed_midway_leaves_nothing_that_makes_the_next_one_wait(fake_build, caplog, tmp_path):
    child = _hold_lock(_cache(tmp_path))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert (_cache(tmp_path) / "build-child" / "lock").exists()  # what torch's FileBaton would wait on forever
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert kernels_mhc.load() is not None
    assert time.monotonic() - start < 10
    assert len(fake_build.builds) == 1 and fake_build.builds[0]["files"] == []  # a fresh folder, no lock in it
    assert not (_cache(tmp_path) / "build-child").exists()
    (message,) = _messages(caplog, "fused CPU kernels")
    assert "building the fused CPU kernels" in message and "earlier build was interrupted" in message


def test_a_live_build_is_waited_for_and_its_result_loaded(fake_build, caplog, tmp_path):
    child = _hold_lock(_cache(tmp_path), then="finish")
    try:
        with caplog.at_level(logging.WARNING):
            assert kernels_mhc.load() is not None
    finally:
        child.wait(timeout=30)
    assert fake_build.builds == [] and fake_build.imports == [str(_library(tmp_path))]
    (message,) = _messages(caplog, "fused CPU kernels")
    assert "waiting for another process that is building" in message


def test_waiting_on_a_live_build_gives_up_after_the_timeout(fake_build, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(kernels_mhc, "BUILD_LOCK_TIMEOUT", 1.0)
    child = _hold_lock(_cache(tmp_path))
    try:
        start = time.monotonic()
        assert kernels_mhc.load() is None
        assert time.monotonic() - start < 10
        error = kernels_mhc.load_error()
        assert error.startswith("TimeoutError: another process has held") and "build.lock" in error
        assert fake_build.builds == []
    finally:
        child.kill()
        child.wait(timeout=30)
    _reset()  # the holder gone (killed), the lock is free at once
    assert kernels_mhc.load() is not None and len(fake_build.builds) == 1


def test_the_windows_lock_calls(monkeypatch):
    """Where fcntl is missing, msvcrt.locking (also released by the OS when its process ends): a lock held elsewhere
    reads as busy, any other failure is raised."""
    calls = []

    def locking(handle, mode, size):
        calls.append((mode, size))
        if outcome:
            raise outcome

    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking))
    try_lock, unlock = kernels_mhc._lock_functions()
    outcome = None
    assert try_lock(7) is True
    outcome = OSError(errno.EACCES, "locked by another process")
    assert try_lock(7) is False
    outcome = OSError(errno.EBADF, "bad file descriptor")
    with pytest.raises(OSError, match="bad file descriptor"):
        try_lock(7)
    outcome = None
    unlock(7)
    assert calls == [(2, 1), (2, 1), (2, 1), (0, 1)]
    monkeypatch.setitem(sys.modules, "msvcrt", None)
    assert kernels_mhc._lock_functions() == (None, None)


_CHILD_PRELUDE = """
import json, logging, sys, time
messages = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger().addHandler(handler)
"""


def _child(script, extensions, timeout, **env):
    """Runs `script` in a child Python with TORCH_EXTENSIONS_DIR=`extensions`; returns its last stdout line as JSON."""
    environment = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), **env}
    environment.pop(kernels_mhc.SWITCH, None)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_PRELUDE + textwrap.dedent(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_a_compiler_training_warns_once_with_the_reason_and_runs_on_pytorch_ops(tmp_path):
    result = _child(
        f"""
        import torch
        from hf_models import MhcConfig, MhcForCausalLM
        from hf_models.mhc import kernels_mhc

        def train(implementation):
            config = MhcConfig.from_pretrained({str(TINY)!r}, hyper_connection_implementation=implementation)
            torch.manual_seed(0)
            model = MhcForCausalLM(config).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            ids = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(1))
            losses = []
            for step in range(2):
                torch.manual_seed(10 + step)
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(loss.item())
            return losses

        auto = train("auto")
        print(json.dumps({{"auto": auto, "eager": train("eager"), "messages": messages,
                          "error": kernels_mhc.load_error()}}))
        """,
        tmp_path / "extensions",
        timeout=600,
        CXX=str(tmp_path / "no-such-compiler"),
    )
    assert result["auto"] == result["eager"]
    assert result["error"].startswith("RuntimeError: the build failed:") and "no-such-compiler" in result["error"]
    assert "not found" in result["error"] or "No such file" in result["error"]
    warnings = [m for m in result["messages"] if "could not be built" in m]
    assert len(warnings) == 1 and result["error"] in warnings[0]
    # the failed build left no library and no build folder, and released its lock
    (cache,) = (tmp_path / "extensions").iterdir()
    assert sorted(p.name for p in cache.iterdir()) == ["build.lock"]


_LOAD = """
from hf_models.mhc import kernels_mhc
start = time.monotonic()
module = kernels_mhc.load()
print(json.dumps({"loaded": module is not None, "error": kernels_mhc.load_error(), "messages": messages,
                  "seconds": time.monotonic() - start}))
"""


@pytest.mark.slow
def test_a_process_killed_while_building_does_not_hang_the_next_one_real_build(tmp_path):
    """The issue's reproduction with a real build: kill -9 the building process three seconds after torch's lock
    file appears (its compiler keeps running, orphaned); the next process builds and loads within the bound, and the
    one after it loads the cached build without building."""
    extensions = tmp_path / "extensions"
    environment = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions)}
    environment.pop(kernels_mhc.SWITCH, None)
    first = subprocess.Popen(
        [sys.executable, "-c", _CHILD_PRELUDE + _LOAD],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so that the orphaned compiler can be ended afterwards
    )
    try:
        deadline = time.monotonic() + 120
        while not list(extensions.glob("*/build-*/lock")):
            assert first.poll() is None and time.monotonic() < deadline, "the build did not start"
            time.sleep(0.2)
        time.sleep(3)
        first.kill()
        first.wait(timeout=30)
        assert list(extensions.glob("*/build-*/lock")), "torch's lock file is left behind"
        second = _child(_LOAD, extensions, timeout=600)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert second["loaded"] and second["error"] is None
    (message,) = [m for m in second["messages"] if "fused CPU kernels" in m]
    assert "building the fused CPU kernels" in message and "earlier build was interrupted" in message
    third = _child(_LOAD, extensions, timeout=120)
    assert third["loaded"] and third["messages"] == [] and third["seconds"] < 5

"""Files that try to hurt the loader: every failure is a CheckpointError naming the file, the
model is left as it was, memory stays bounded; crashes and interrupts run in subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deferral import CheckpointError, nn
from deferral import _safetensors_read as reader_module
from deferral._safetensors_read import read_safetensors
from tests.conftest import snapshot

posix = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and special files")


def _file(path: Path, header: Any, data: bytes = b"") -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)
    return path


def mlp() -> nn.Sequential:
    return nn.Sequential([nn.Dense(8, activation="relu"), nn.Dense(3)])


def materialized() -> nn.Sequential:
    net = mlp()
    net.initialize(seed=3)
    net(np.ones((1, 5), dtype="float32"))
    return net


_ENTRY = b'{"0.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
HOSTILE = {
    "Infinity in a shape": (b'{"0.weight":{"dtype":"F32","shape":[Infinity],"data_offsets":[0,4]}}', "is not JSON"),
    "NaN in a shape": (b'{"0.weight":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}', "is not JSON"),
    "deep nesting": (b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than 127"),
    "deep nesting in an ignored field": (_ENTRY[:-1] + b',"x":' + b"[" * 500 + b"]" * 500 + b"}}", "nests deeper"),
    "65 dimensions": (json.dumps({"0.weight": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}).encode(),
                      "shape"),
    "0 x 2**64": (json.dumps({"0.weight": {"dtype": "F32", "shape": [0, 2**64], "data_offsets": [0, 0]}}).encode(),
                  "non-negative integers below 2\\*\\*64"),
    "float dimension": (b'{"0.weight":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', "non-negative integers"),
    "string dimension": (b'{"0.weight":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}', "non-negative integers"),
    "negative dimension": (b'{"0.weight":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', "non-negative integers"),
    "duplicate names": (_ENTRY + b',"0.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "more than once"),
    "overlap": (_ENTRY + b',"0.bias":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "overlaps"),
    "lone surrogate": (b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "surrogate"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_checkpoint_errors(tmp_path: Path, case: str) -> None:
    header, match = HOSTILE[case]
    path = _file(tmp_path / "bad.safetensors", header, bytes(4))
    net = materialized()
    before = snapshot(net)
    with pytest.raises(CheckpointError, match=match) as info:
        net.load_parameters(path)
    assert str(path) in str(info.value)
    assert snapshot(net) == before


def test_a_hole_and_trailing_bytes_are_refused(tmp_path: Path) -> None:
    hole = _file(tmp_path / "hole.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8))
    with pytest.raises(CheckpointError, match="leaves a hole"):
        read_safetensors(hole)
    tail = _file(tmp_path / "tail.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(9))
    with pytest.raises(CheckpointError, match="5 bytes after the last tensor"):
        read_safetensors(tail)


def test_the_header_size_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes((100_000_001).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="100,000,001 bytes, more than the format's limit of 100,000,000"):
        read_safetensors(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory, not a regular file"):
        mlp().load_parameters(tmp_path)


def test_a_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"cannot read .*No such file"):
        mlp().load_parameters(tmp_path / "missing.safetensors")


_FIFO = textwrap.dedent("""
    import os, sys
    from deferral import CheckpointError, nn
    os.mkfifo(sys.argv[1])
    try:
        nn.Sequential([nn.Dense(2)]).load_parameters(sys.argv[1])
    except CheckpointError as e:
        print(e)
""")


@posix
def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _FIFO, str(tmp_path / "pipe")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "is a named pipe, not a regular file" in done.stdout


@pytest.mark.parametrize("change", ["append", "truncate"])
def test_a_file_changed_while_loading_is_refused_and_nothing_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    path = tmp_path / "m.safetensors"
    materialized().save_parameters(path)
    original = reader_module.SafetensorsReader.read
    calls = []

    def read_then_change(self: Any, entry: Any) -> np.ndarray:
        out = original(self, entry)
        if not calls:
            with open(path, "r+b") as f:
                if change == "append":
                    time.sleep(0.01)  # a later modification time, even on coarse clocks
                    f.seek(0, 2)
                    f.write(b" ")
                else:
                    f.truncate(100)
        calls.append(entry.name)
        return out

    monkeypatch.setattr(reader_module.SafetensorsReader, "read", read_then_change)
    net = mlp()
    net.initialize(seed=0)
    before = snapshot(net)
    with pytest.raises(CheckpointError, match="changed while being read" if change == "append" else "shrank while being read"):
        net.load_parameters(path)
    assert snapshot(net) == before


def _measure(function: Any) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded_whatever_the_header_claims(tmp_path: Path) -> None:
    size = 8 * 2**20
    header = {f"t{i}": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]} for i in range(600)}
    path = _file(tmp_path / "same-range.safetensors", header, bytes(size))
    net = nn.Sequential([nn.Dense(4)])

    def load() -> None:
        with pytest.raises(CheckpointError, match="overlaps"):
            net.load_parameters(path)

    peak = _measure(load)
    assert peak < 2 * 2**20, peak  # the header's objects, nothing of the 600 x 8 MiB it claims


def test_memory_while_reading_is_the_tensors_bytes(tmp_path: Path) -> None:
    net = nn.Sequential([nn.Dense(1024), nn.Dense(1024)])
    net.initialize(seed=0)
    net(np.ones((1, 1024), dtype="float32"))
    path = tmp_path / "m.safetensors"
    net.save_parameters(path)
    total = sum(w.nbytes for w in net.get_weights())
    peak = _measure(lambda: read_safetensors(path))
    assert total <= peak < total + 2**20, (peak, total)
    fresh = nn.Sequential([nn.Dense(1024), nn.Dense(1024)])
    peak = _measure(lambda: fresh.load_parameters(path))
    # The parameters and nothing more: each tensor is read into the array that becomes its storage.
    assert total <= peak < total + 2**20, (peak, total)


# Peak resident memory of one load into a fresh model, over the memory before it, on one backend:
# the kernel's high-water mark (VmHWM), reset just before loading (Linux: clear_refs 5), counts
# what TensorFlow's and PyTorch's own allocators take too, which tracemalloc does not see.
_LOAD_PEAK = textwrap.dedent("""
    import gc, json, sys
    import numpy as np
    from deferral import nn

    backend, path = sys.argv[1], sys.argv[2]

    def status(key):
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

    def make():
        return nn.Sequential([nn.Dense(2048), nn.Dense(16)])

    source = make(); source.initialize(seed=0); source(np.ones((1, 6144), "float32"))
    source.save_parameters(path)
    params = sum(w.nbytes for w in source.get_weights())
    del source
    warm = nn.Dense(4); warm.initialize(backend=backend); warm(np.ones((1, 4), "float32"))
    net = make(); net.initialize(backend=backend)
    gc.collect()
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")
    net.load_parameters(path)
    peak = status("VmHWM") - base
    print(json.dumps({"params": params, "largest": 2048 * 6144 * 4, "peak": peak}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("backend", [
    pytest.param(name, marks=pytest.mark.skipif(
        name != "numpy" and importlib.util.find_spec(name) is None, reason=f"{name} is not installed"))
    for name in ("numpy", "torch", "tensorflow", "jax")
])
def test_loading_takes_the_parameters_memory_and_at_most_one_chunk_more(backend: str, tmp_path: Path) -> None:
    """48 MiB of parameters loaded on each backend: resident memory grows by the parameters
    and less than one read chunk (before the reader handed its arrays over, the backends'
    copies doubled it, TensorFlow's tripled it)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _LOAD_PEAK, backend, str(tmp_path / "m.safetensors")],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    print(backend, {k: f"{v / 2**20:.1f} MiB" for k, v in got.items()})  # pytest -s shows the figures
    assert got["params"] - 2**20 <= got["peak"] < got["params"] + reader_module.CHUNK_BYTES, got
    assert got["peak"] < got["params"] + got["largest"] // 2, got


_REWRITER = textwrap.dedent("""
    import os, sys, time
    path, stop = sys.argv[1], time.time() + float(sys.argv[2])
    data = open(path, "rb").read()
    while time.time() < stop:
        with open(path, "r+b") as f:  # rewritten in place: truncated, then written again
            f.truncate(len(data) // 3)
            f.seek(0)
            f.write(data)
""")
_LOADER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from deferral import CheckpointError, nn
    path, stop = sys.argv[1], time.time() + float(sys.argv[2])
    ok = refused = 0
    while time.time() < stop:
        net = nn.Sequential([nn.Dense(256), nn.Dense(256)])
        try:
            net.load_parameters(path)
            ok += 1
        except CheckpointError:
            refused += 1
            assert all(p.state != "materialized" for p in net.collect_params().values())
    print(ok, refused)
""")


@posix
def test_a_file_rewritten_by_another_process_never_crashes_the_loader(tmp_path: Path) -> None:
    net = nn.Sequential([nn.Dense(256), nn.Dense(256)])
    net.initialize(seed=0)
    net(np.ones((1, 256), dtype="float32"))
    path = tmp_path / "m.safetensors"
    net.save_parameters(path)
    writer = subprocess.Popen([sys.executable, "-c", _REWRITER, str(path), "4"])
    loader = subprocess.run([sys.executable, "-c", _LOADER, str(path), "3"], capture_output=True, text=True,
                            timeout=120)
    writer.wait(timeout=60)
    assert loader.returncode == 0, (loader.returncode, loader.stderr[-2000:])  # -7 would be SIGBUS
    ok, refused = map(int, loader.stdout.split())
    assert refused > 0 and ok + refused > 10, loader.stdout


_INTERRUPTED = textwrap.dedent("""
    import json, signal, sys
    import numpy as np
    from deferral import nn

    armed, stop = [False], []

    def interrupt(*args):  # Python's own behavior (raise KeyboardInterrupt), only while loading
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
    files = sys.argv[1:3]

    def make():
        return nn.Sequential([nn.Dense(32) for _ in range(40)])

    def values(net):
        return [p.data().tobytes() if p.initialized else p.state for p in net.collect_params().values()]

    expected = []
    for path in files:
        net = make()
        net.load_parameters(path)
        expected.append(values(net))
    counts = {"interrupted in load": 0, "loads": 0, "wrong": 0}
    net = make()
    net.load_parameters(files[0])
    i = 0
    print("ready", flush=True)
    while not stop:
        target = net if i % 2 else make()  # a materialized model, or a deferred one
        before = values(target)
        try:
            armed[0] = True
            target.load_parameters(files[i % 2])
            armed[0] = False
            counts["loads"] += 1
        except KeyboardInterrupt:
            counts["interrupted in load"] += 1
        except BaseException as exc:  # BufferError, CheckpointError...: the interrupt was lost
            armed[0] = False
            counts["wrong"] += 1
            print(repr(exc), file=sys.stderr)
        if values(target) not in (before, expected[i % 2]):
            counts["wrong"] += 1
        i += 1
    print(json.dumps(counts))
""")


@posix
def test_an_interrupt_while_loading_rolls_back_and_stays_a_keyboard_interrupt(tmp_path: Path) -> None:
    paths = []
    for seed in (1, 2):
        net = nn.Sequential([nn.Dense(32) for _ in range(40)])
        net.initialize(seed=seed)
        net(np.ones((1, 32), dtype="float32"))
        paths.append(str(tmp_path / f"m{seed}.safetensors"))
        net.save_parameters(paths[-1])
    child = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, *paths], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    rng = random.Random(0)
    for _ in range(150):
        time.sleep(rng.uniform(0, 0.01))
        os.kill(child.pid, signal.SIGINT)
    os.kill(child.pid, signal.SIGUSR1)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2000:]
    counts = json.loads(out.strip().splitlines()[-1])
    print(counts)
    assert counts["wrong"] == 0, (counts, err[-2000:])
    assert counts["interrupted in load"] >= 30 and counts["loads"] > 0, counts

"""Saving is atomic and safe: exclusive temporary files, planted links ignored, concurrent saves,
nothing left behind on failure, files any safetensors reader opens."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deferral import CheckpointError, interop, nn
from deferral import _safetensors_write as writer

posix = pytest.mark.skipif(os.name != "posix", reason="symlinks and modes as POSIX has them")


def model(seed: int) -> nn.Sequential:
    net = nn.Sequential([nn.Dense(64, activation="relu"), nn.Dense(64), nn.Dense(3)])
    net.initialize(seed=seed)
    net(np.ones((1, 32), dtype="float32"))
    return net


def weights(net: nn.Sequential) -> list[bytes]:
    return [w.tobytes() for w in net.get_weights()]


def loaded(path: Path) -> list[bytes]:
    fresh = nn.Sequential([nn.Dense(64, activation="relu"), nn.Dense(64), nn.Dense(3)])
    fresh.load_parameters(path)
    return weights(fresh)


@posix
def test_a_link_planted_at_the_old_tmp_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "m.safetensors"
    (tmp_path / "m.safetensors.tmp").symlink_to(victim)
    model(1).save_parameters(target)
    assert victim.read_text() == "precious"
    assert loaded(target) == weights(model(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "m.safetensors.tmp", "victim.txt"]


@posix
def test_links_planted_at_the_next_temporary_names_are_not_followed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = ["aaaaaaaa", "bbbbbbbb"]
    for name in planted:  # mkstemp will try these names first: each exists (a link), so it moves on
        (tmp_path / f".m.safetensors.{name}.tmp").symlink_to(victim)

    def names() -> Iterator[str]:
        yield from planted
        yield from tempfile._RandomNameSequence()  # type: ignore[attr-defined]

    monkeypatch.setattr(tempfile, "_get_candidate_names", names)
    model(2).save_parameters(tmp_path / "m.safetensors")
    assert victim.read_text() == "precious"
    assert all((tmp_path / f".m.safetensors.{n}.tmp").is_symlink() for n in planted)
    assert loaded(tmp_path / "m.safetensors") == weights(model(2))


def test_concurrent_saves_from_threads_leave_one_whole_model(tmp_path: Path) -> None:
    nets = [model(seed) for seed in range(4)]
    expected = [weights(n) for n in nets]
    for trial in range(20):
        target = tmp_path / f"t{trial}.safetensors"
        barrier = threading.Barrier(len(nets))

        def save(net: nn.Sequential, target: Path = target, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            net.save_parameters(target)

        threads = [threading.Thread(target=save, args=(n,)) for n in nets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert loaded(target) in expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"t{i}.safetensors" for i in range(20))


_SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from deferral import nn
    seed, path = int(sys.argv[1]), sys.argv[2]
    net = nn.Sequential([nn.Dense(64, activation="relu"), nn.Dense(64), nn.Dense(3)])
    net.initialize(seed=seed)
    net(np.ones((1, 32), dtype="float32"))
    for _ in range(15):
        net.save_parameters(path)
""")


def test_concurrent_saves_from_processes_never_show_a_mixed_file(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    model(0).save_parameters(target)
    expected = [weights(model(seed)) for seed in range(4)]
    savers = [subprocess.Popen([sys.executable, "-c", _SAVER, str(seed), str(target)]) for seed in range(4)]
    reads = 0
    while any(p.poll() is None for p in savers) or reads < 20:
        assert loaded(target) in expected  # every read sees one complete model
        reads += 1
    assert [p.wait(timeout=60) for p in savers] == [0] * 4
    assert loaded(target) in expected
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_save_leaves_the_old_file_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            failure: BaseException) -> None:
    target = tmp_path / "m.safetensors"
    model(1).save_parameters(target)
    before = target.read_bytes()
    original = writer._write

    def half(fd: int, tensors: dict, blob: bytes) -> None:  # type: ignore[type-arg]
        os.write(fd, blob[: len(blob) // 2])
        raise failure

    monkeypatch.setattr(writer, "_write", half)
    expected = CheckpointError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected, match="No space left" if expected is CheckpointError else None):
        model(2).save_parameters(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    monkeypatch.setattr(writer, "_write", original)
    model(2).save_parameters(target)
    assert loaded(target) == weights(model(2))


def test_saving_into_a_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"cannot save to .*missing.*No such file"):
        model(1).save_parameters(tmp_path / "missing" / "m.safetensors")


@posix
def test_file_modes_are_those_of_a_normal_file(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    model(1).save_parameters(target)
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    target.chmod(0o640)
    model(2).save_parameters(target)
    assert target.stat().st_mode & 0o777 == 0o640


def test_integer_and_bool_tensors_round_trip_and_match_the_reference(tmp_path: Path) -> None:
    numpy_reference = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    arrays = {
        "bn.num_batches_tracked": np.array(12345678901, dtype=np.int64),
        "tokens": rng.integers(-2**31, 2**31 - 1, size=(7, 5), dtype=np.int32),
        "i8": rng.integers(-128, 127, size=9, dtype=np.int8),
        "i16": rng.integers(-2**15, 2**15 - 1, size=(3, 3), dtype=np.int16),
        "u8": rng.integers(0, 255, size=4, dtype=np.uint8),
        "mask": rng.random((4, 4)) > 0.5,
        "w": rng.standard_normal((3, 2)).astype(np.float16),
    }
    path = tmp_path / "buffers.safetensors"
    interop.save_safetensors(path, arrays, {"note": "buffers"})
    back, metadata = interop.load_safetensors(path)
    assert metadata == {"note": "buffers"}
    assert {k: (v.dtype, v.shape, v.tobytes()) for k, v in back.items()} == \
        {k: (v.dtype, v.shape, v.tobytes()) for k, v in arrays.items()}
    theirs = numpy_reference.load_file(str(path))
    assert {k: v.tobytes() for k, v in theirs.items()} == {k: v.tobytes() for k, v in arrays.items()}
    numpy_reference.save_file(arrays, str(tmp_path / "theirs.safetensors"))
    ours, _ = interop.load_safetensors(tmp_path / "theirs.safetensors")
    assert {k: (v.dtype, v.tobytes()) for k, v in ours.items()} == {k: (v.dtype, v.tobytes()) for k, v in arrays.items()}


def test_save_safetensors_refuses_other_dtypes(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="names: expected a dtype a checkpoint can hold"):
        interop.save_safetensors(tmp_path / "x.safetensors", {"names": np.array(["a", "b"])})
    assert list(tmp_path.iterdir()) == []


# -- a model spread over processes: the backend's Collective (faked here, in one process) ----
class FakeCollective:
    """Records the core's use of a backend's ``deferral_collective`` answer."""

    def __init__(self, writer: bool, other_error: str | None = None) -> None:
        self.writer, self.other_error, self.gathered, self.agreed = writer, other_error, [], []

    def whole(self, value: object) -> np.ndarray:
        self.gathered.append(value)
        return np.asarray(value)

    def agree(self, message: str | None) -> str | None:
        self.agreed.append(message)
        return message or self.other_error

    def record(self) -> object:
        from deferral.hookspec import Collective

        return Collective(writer=self.writer, whole=self.whole, agree=self.agree, processes=2,
                          describe="sharded over 2 processes (a test)", sharded_checkpoints="the test's own")


def _spread(monkeypatch: pytest.MonkeyPatch, fake: FakeCollective) -> None:
    import deferral

    monkeypatch.setattr(deferral.load_backend("numpy"), "collective", lambda values: fake.record())


def test_a_spread_model_is_gathered_in_file_order_and_written_by_the_writer_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = model(3)
    whole = tmp_path / "whole.safetensors"
    net.save_parameters(whole)
    reader, writer_ = FakeCollective(writer=False), FakeCollective(writer=True)
    _spread(monkeypatch, reader)
    net.save_parameters(tmp_path / "not-written.safetensors")
    assert not (tmp_path / "not-written.safetensors").exists()
    _spread(monkeypatch, writer_)
    net.save_parameters(tmp_path / "written.safetensors")
    values = [p.data() for p in net.collect_params().values()]
    for fake in (reader, writer_):  # every process gathers every parameter once, in file order
        assert [id(v) for v in fake.gathered] == [id(v) for v in values] and fake.agreed == [None]
    assert (tmp_path / "written.safetensors").read_bytes() == whole.read_bytes()


def test_a_failed_write_reaches_every_process_after_all_gathered(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    net = model(3)
    fake = FakeCollective(writer=True)
    _spread(monkeypatch, fake)
    with pytest.raises(CheckpointError, match="cannot save to"):
        net.save_parameters(tmp_path / "missing" / "x.safetensors")
    assert len(fake.gathered) == len(net.collect_params()) and "cannot save" in fake.agreed[0]
    other = FakeCollective(writer=False, other_error="cannot save to 'x': disk full")
    _spread(monkeypatch, other)
    with pytest.raises(CheckpointError, match=r"the process writing .* failed: cannot save to 'x': disk full"):
        net.save_parameters(tmp_path / "x.safetensors")


def test_a_writer_failing_with_any_exception_still_takes_part_in_every_collective(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer running out of memory on its second gather does not leave the other
    processes waiting: it still gathers the rest and tells them, then raises."""
    net = model(3)
    fake = FakeCollective(writer=True)
    real, calls = fake.whole, [0]

    def whole(value: object) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 2:
            raise MemoryError("host out of memory")
        return real(value)

    fake.whole = whole  # type: ignore[method-assign]
    _spread(monkeypatch, fake)
    with pytest.raises(MemoryError):
        net.save_parameters(tmp_path / "x.safetensors")
    assert calls[0] == len(net.collect_params()) and fake.agreed == ["host out of memory"]
    assert not (tmp_path / "x.safetensors").exists()


def test_loading_into_a_spread_model_is_refused_and_changes_nothing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    net = model(3)
    path = tmp_path / "m.safetensors"
    model(4).save_parameters(path)
    before = weights(net)
    _spread(monkeypatch, FakeCollective(writer=True))
    with pytest.raises(CheckpointError, match=r"sharded over 2 processes \(a test\).*the test's own\. Nothing"):
        net.load_parameters(path)
    assert weights(net) == before

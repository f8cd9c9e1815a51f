"""`ModelCache`: one HTTP client per endpoint and loop, a bounded cache, evicted clients closed."""

import asyncio
import gc
import os
import threading
import time
import weakref

import httpx
import pytest

from langgraph_moa.providers._models import (
    IDLE_LOOPS_KEPT,
    ModelCache,
    build_model,
    http_client_key,
)
from langgraph_moa.transport._call_loop import call_loop
from tests.helpers import exit_code, fork_while_held

ENDPOINT = "m@http://127.0.0.1:9/v1"


def test_parameter_variants_share_one_http_client_and_the_cache_stays_bounded():
    cache = ModelCache(size=16)
    models = [
        cache.get(ENDPOINT, {"temperature": i / 100, "max_tokens": 10 + i}) for i in range(60)
    ]
    assert {m.temperature for m in models[-2:]} == {0.58, 0.59}
    assert models[5].max_tokens == 15
    assert len({id(m.http_async_client) for m in models}) == 1
    assert cache.stats() == {"models": 16, "clients": 1}
    assert cache.get(ENDPOINT, {"temperature": 0.59, "max_tokens": 69}) is models[-1]


def test_models_of_one_server_share_its_client_and_other_servers_get_their_own():
    cache = ModelCache()
    a = cache.get("a@http://127.0.0.1:9/v1", {})
    b = cache.get("b@http://127.0.0.1:9/v1/", {"temperature": 0.1})
    other = cache.get("a@http://127.0.0.1:10/v1", {})
    assert a.http_async_client is b.http_async_client
    assert other.http_async_client is not a.http_async_client
    assert http_client_key("openai:gpt-4o") == http_client_key("openai:gpt-4o-mini") == "openai:"


async def test_an_evicted_client_is_closed_once_no_call_holds_its_model():
    cache = ModelCache(size=1)
    held = cache.get("a@http://127.0.0.1:9/v1", {"temperature": 0.5})
    client = held.http_async_client
    cache.get("b@http://127.0.0.1:9/v2", {})  # another endpoint: evicts the first model
    await asyncio.sleep(0.01)
    assert not client.is_closed  # a call may still be using it
    del held
    gc.collect()
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert client.is_closed
    assert cache.stats() == {"models": 1, "clients": 1}


async def test_a_client_shared_by_a_cached_model_stays_open(fake):
    cache = ModelCache(size=2)
    first = cache.get(ENDPOINT, {"temperature": 0.1})
    client = first.http_async_client
    cache.get(ENDPOINT, {"temperature": 0.2})
    del first
    cache.get(ENDPOINT, {"temperature": 0.3})  # evicts 0.1; 0.2 and 0.3 still use the client
    gc.collect()
    await asyncio.sleep(0.05)
    assert not client.is_closed and cache.stats()["clients"] == 1


def test_instances_get_copies_with_the_roles_limits_and_keep_their_own_clients(fake):
    cache = ModelCache(size=1)
    model = fake("A")
    proposer = cache.get(model, {"temperature": 0.3, "max_tokens": 5})
    aggregator = cache.get(model, {"temperature": 0.0, "max_tokens": 99})
    assert (proposer.temperature, proposer.max_tokens) == (0.3, 5)
    assert (aggregator.temperature, aggregator.max_tokens) == (0.0, 99)
    assert model.max_tokens is None and cache.stats()["clients"] == 0


def test_build_model_uses_the_client_it_is_given():
    shared = httpx.AsyncClient()
    model = build_model(ENDPOINT, {"temperature": 0.2}, http_async_client=shared)
    assert model.http_async_client is shared


def test_an_evicted_client_of_sync_runs_is_closed_on_the_call_loop():
    # Sync runs with a layer deadline use their models' async clients on the call loop.
    call_loop()
    cache = ModelCache(size=1)
    held = cache.get("a@http://127.0.0.1:9/v1", {})
    client = held.http_async_client
    cache.get("b@http://127.0.0.1:9/v2", {})  # evicts the first model
    del held
    gc.collect()
    deadline = time.monotonic() + 10  # the call loop is the process's: it may be busy
    while not client.is_closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.is_closed


def test_a_forked_child_builds_its_own_models_and_call_loop():
    cache = ModelCache()
    parent_model = cache.get(ENDPOINT, {})
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), call_loop()).result(5)
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's loops or clients may be reused
        try:
            fresh = cache.stats() == {"models": 0, "clients": 0}
            rebuilt = cache.get(ENDPOINT, {}) is not parent_model
            loop_runs = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "ok"), call_loop())
            os._exit(0 if fresh and rebuilt and loop_runs.result(5) == "ok" else 1)
        finally:
            os._exit(2)
    assert exit_code(pid) == 0


def test_a_forked_child_does_not_wait_for_a_client_lock_a_parent_thread_held():
    """The child drops its parent's models (`_forget_after_fork`), and each counted itself
    gone under its client's lock. Another thread of the parent holding that lock at the fork
    has no counterpart in the child to release it: the child hung, in the fork itself or at
    its next garbage collection. The parent's clients are the parent's to count and close."""
    cache = ModelCache()
    cache.get(ENDPOINT, {})  # held by the cache alone: the child's reset frees it
    shared = cache._sync.clients[http_client_key(ENDPOINT)]

    def child() -> bool:
        gc.collect()
        return not shared.sync_client.is_closed

    assert fork_while_held(shared.lock, child) == 0  # as a parent thread counting a model
    assert shared.users == 1 and not shared.sync_client.is_closed  # the parent's, still


def test_a_keyless_spelling_of_a_keyed_endpoint_never_shares_its_model(monkeypatch):
    from langgraph_moa.providers._models import OpenAIEndpoint

    monkeypatch.setenv("KEYED_ENDPOINT_KEY", "sekret")
    keyed = OpenAIEndpoint(
        base_url="http://127.0.0.1:9/v1", model="m", api_key_env="KEYED_ENDPOINT_KEY"
    )
    cache = ModelCache()
    keyless = cache.get(keyed.label(), {})  # a client naming it by its label, first
    model = cache.get(keyed, {})
    assert model is not keyless
    assert model.openai_api_key.get_secret_value() == "sekret"
    assert keyless.openai_api_key.get_secret_value() == "not-needed"
    # Parameters that change the client (timeouts) are part of the key too.
    assert cache.get(keyed, {"timeout": 5}) is not cache.get(keyed, {"timeout": 6})


def test_a_keyless_endpoint_sends_no_account_headers_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-server")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_server")
    model = build_model("m@http://127.0.0.1:9/v1", {})
    for client in (model.root_client, model.root_async_client):
        headers = client.default_headers
        assert "OpenAI-Organization" not in headers or not isinstance(
            headers["OpenAI-Organization"], str
        )
        assert not isinstance(headers.get("OpenAI-Project"), str)


def test_every_model_on_a_client_the_package_builds_gets_the_aiohttp_transport(monkeypatch):
    import openai

    from langgraph_moa.local.runtime import LocalRuntime

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-test")

    class Server:  # the local runtime's server, not spawned
        url = "http://127.0.0.1:9/v1"

    monkeypatch.setattr(LocalRuntime, "server", lambda self, name: Server())
    cache = ModelCache()
    for spec in [ENDPOINT, "openai:gpt-4o-mini", "together:meta/llama", "local:qwen2.5-0.5b"]:
        client = cache.get(spec, {}).http_async_client
        assert isinstance(client, openai.DefaultAioHttpClient), spec
        assert "get_client" in vars(client._transport), spec


def test_provider_models_share_one_sync_client_too(monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "fake-key-for-building")
    cache = ModelCache()
    models = [
        cache.get("together:Qwen/Qwen2.5-72B-Instruct-Turbo", {"temperature": t / 10})
        for t in range(5)
    ]
    sync_clients = {id(c._client) for m in models for c in (m.client._client, m.root_client)}
    assert len(sync_clients) == 1  # not two per model, each with its own TLS setup
    assert cache.stats() == {"models": 5, "clients": 1}


async def test_ainvoke_builds_each_model_once(fake):
    from langgraph_moa import MoAConfig, create_moa_graph

    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config)
    await graph.ainvoke({"messages": [("user", "q")]})
    cache = graph.nodes["prepare"].bound.func.__self__.models
    assert len(cache._sync.models) == 0  # the sync `prepare` used to build them all again
    assert cache.stats()["models"] == 3


async def test_a_dropped_cache_goes_with_its_models_and_closes_its_clients():
    """A notebook cell re-run builds a new graph (and cache) each time: the old ones must go.

    Each model's release hook held its cache, which holds the model: no cache was ever freed,
    and every one kept its connections open.
    """
    cache = ModelCache()
    model = cache.get(ENDPOINT, {})
    client, sync_client = model.http_async_client, model.http_client
    gone = weakref.ref(cache)
    del cache, model
    gc.collect()
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert gone() is None
    assert client.is_closed and sync_client.is_closed


def test_a_finished_loops_models_go_with_it():
    """One graph run under `asyncio.run` again and again keeps no finished loop's models.

    Each endpoint's client held its loop, the cache's weak key, so no loop's entry went.
    """
    cache = ModelCache()

    async def build() -> weakref.ref[asyncio.AbstractEventLoop]:
        cache.get(ENDPOINT, {})
        return weakref.ref(asyncio.get_running_loop())

    finished = asyncio.run(build())
    asyncio.run(build())
    gc.collect()
    assert cache.stats() == {"models": 1, "clients": 1}  # the releases made, their clients go
    gc.collect()
    assert finished() is None


class _CollectingLock:
    """A lock that collects garbage as soon as it is taken, as an allocation there may."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        self.lock.acquire()
        gc.collect()

    def __exit__(self, *exc):
        self.lock.release()


def test_a_collection_while_a_client_is_counted_does_not_hang_the_thread():
    """A model whose last reference is in a reference cycle is freed by the garbage
    collector, which runs at any allocation, so also while `get` holds a client's count
    lock (calling a lock's ``__exit__`` allocates). An evicted model of that client then
    counted itself gone in the same thread, waited for that lock, and the thread (and the
    cache's lock, so every other thread building a model of the cache) hung for ever."""
    cache = ModelCache(size=1)
    first = cache.get(ENDPOINT, {"temperature": 0.1})
    gone = weakref.ref(first)
    shared = cache._sync.clients[http_client_key(ENDPOINT)]
    gc.disable()  # the first model is collected inside the lock, not before
    try:
        cache.get(ENDPOINT, {"temperature": 0.2})  # evicts the first
        cycle = [first]
        cycle.append(cycle)  # as a failed call's traceback holds it, through its frames
        del first, cycle
        shared.lock = _CollectingLock(shared.lock)
        worker = threading.Thread(
            target=cache.get, args=(ENDPOINT, {"temperature": 0.3}), daemon=True
        )
        worker.start()
        worker.join(timeout=30)
    finally:
        gc.enable()
    assert not worker.is_alive()
    cache.stats()  # the releases queued are made
    assert gone() is None and shared.users == 1  # the cached model alone


def test_a_collection_while_a_model_is_built_leaves_its_shared_client_open(monkeypatch):
    """`get` took the endpoint's client but counted its new model only once built. The
    client's one other model, evicted and freed by the garbage collector meanwhile (which
    runs at any allocation, so also while a model is built), counted itself the last, and
    closed the client: the new model was cached on a closed client, every call through it
    failing with "client has been closed" until it was evicted."""
    from langgraph_moa.providers import _models

    cache = ModelCache(size=1)
    first = cache.get(ENDPOINT, {"temperature": 0.1})
    gone = weakref.ref(first)
    shared = cache._sync.clients[http_client_key(ENDPOINT)]

    def collecting_build(*args, **kwargs):
        gc.collect()  # the first model goes here, while the next one is built
        return build_model(*args, **kwargs)

    gc.disable()  # the first model is collected while the next is built, not before
    try:
        cache.get("m@http://127.0.0.1:10/v1", {})  # another endpoint: evicts the first
        cycle = [first]
        cycle.append(cycle)  # as a failed call's traceback holds it, through its frames
        del first, cycle
        monkeypatch.setattr(_models, "build_model", collecting_build)
        model = cache.get(ENDPOINT, {"temperature": 0.2})
    finally:
        gc.enable()
    assert gone() is None
    cache.stats()  # the releases queued are made
    assert model.http_client is shared.sync_client and shared.users == 1
    assert not shared.sync_client.is_closed
    assert cache._sync.clients[http_client_key(ENDPOINT)] is shared


def test_a_model_that_cannot_be_built_leaves_no_count_and_no_client(monkeypatch):
    # Its client is counted before the build (above); a failed build gives the count back,
    # or the endpoint's client would never be closed, and a new one would stay in the cache.
    from langgraph_moa.providers import _models

    cache = ModelCache()
    cache.get(ENDPOINT, {"temperature": 0.1})
    shared = cache._sync.clients[http_client_key(ENDPOINT)]

    def failing_build(*args, **kwargs):
        raise ValueError("no such model")

    monkeypatch.setattr(_models, "build_model", failing_build)
    for spec in (ENDPOINT, "m@http://127.0.0.1:10/v1"):
        with pytest.raises(ValueError, match="no such model"):
            cache.get(spec, {"temperature": 0.2})
    assert shared.users == 1 and not shared.sync_client.is_closed
    assert cache.stats() == {"models": 1, "clients": 1}


def test_two_caches_freeing_each_other_s_models_under_their_locks_do_not_deadlock():
    """A model's finalizer counted it gone under its cache's lock. A thread holding one
    cache's lock (building a model) that freed a model of another cache waited for that
    cache's lock, while a thread holding that one freed a model of the first: each waited
    for the other for ever (the garbage collector frees models wherever it runs). A
    finalizer now takes no lock: the release is queued and made by a thread of its own."""
    caches = [ModelCache(size=1), ModelCache(size=1)]
    models = [cache.get(ENDPOINT, {"temperature": 0.1}) for cache in caches]
    for cache in caches:
        cache.get("m@http://127.0.0.1:10/v1", {})  # evicts the first: `models` holds it alone
    clients = [model.http_client for model in models]
    together = threading.Barrier(2, timeout=30)

    def free_the_other_s(mine: int) -> None:
        with caches[mine]._lock:  # as while it builds a model
            together.wait()
            models[1 - mine] = None  # the other cache's model goes here, in this thread
            together.wait()

    workers = [threading.Thread(target=free_the_other_s, args=(i,), daemon=True) for i in (0, 1)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    for worker in workers:
        worker.join(timeout=max(deadline - time.monotonic(), 0.0))
    assert not any(worker.is_alive() for worker in workers)
    deadline = time.monotonic() + 30  # the releases are made by the release thread
    while not all(c.is_closed for c in clients) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(client.is_closed for client in clients)
    assert [cache.stats() for cache in caches] == [{"models": 1, "clients": 1}] * 2


def test_loops_driven_in_turn_keep_their_models():
    """Two loops of one's own, each run in turn (``run_until_complete``, as two worker
    threads each with its loop do), rebuilt each other's models at every run: a loop's
    first model since the other ran dropped every loop not running at that moment."""
    cache = ModelCache()

    async def build() -> object:
        return cache.get(ENDPOINT, {})

    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    try:
        first = [loop.run_until_complete(build()) for loop in loops]
        again = [loop.run_until_complete(build()) for loop in loops]
        assert [a is b for a, b in zip(first, again, strict=True)] == [True, True]
        assert cache.stats() == {"models": 2, "clients": 2}
    finally:
        for loop in loops:
            loop.close()


def test_the_stopped_loops_kept_are_bounded():
    """A loop stopped but never closed (``run_until_complete`` on a loop of one's own, left
    open) kept its models and their clients as long as the cache lived: only closed loops'
    entries went. The stopped loops kept are the last used few (`IDLE_LOOPS_KEPT`); the
    one used longest ago loses its models, and run again, builds them anew."""
    cache = ModelCache()

    async def build() -> weakref.ref:
        return weakref.ref(cache.get(ENDPOINT, {}))

    loops = [asyncio.new_event_loop() for _ in range(IDLE_LOOPS_KEPT + 1)]
    try:
        first = loops[0].run_until_complete(build())
        for loop in loops[1:]:
            loop.run_until_complete(build())
        asyncio.run(build())
        gc.collect()
        assert cache.stats() == {"models": IDLE_LOOPS_KEPT + 1, "clients": IDLE_LOOPS_KEPT + 1}
        assert first() is None
        assert loops[0].run_until_complete(build())() is not None  # built anew
    finally:
        for loop in loops:
            loop.close()


def test_a_model_asked_for_again_is_found_without_building_its_key_again():
    """Every model call asks for its model: its key (the spec's identity, each parameter's
    ``repr``, sorted) and whether it takes a timeout were worked out anew each time, about 25
    function calls per model call for the same few answers."""
    import cProfile
    import pstats

    cache = ModelCache()
    params = {"temperature": 0.2, "max_tokens": 10}
    first = cache.get(ENDPOINT, dict(params))
    profiler = cProfile.Profile()
    profiler.enable()
    again = cache.get(ENDPOINT, dict(params))
    profiler.disable()
    assert again is first
    called = {name for (_f, _l, name) in pstats.Stats(profiler).stats}  # type: ignore[attr-defined]
    assert not called & {"cache_identity", "with_call_timeout", "<built-in method builtins.repr>"}


def test_remembered_model_keys_tell_apart_what_builds_another_model(fake):
    """The keys `get` remembers are looked up by spec, parameters and timeout: each that
    builds another model gets its own, and an instance is known by its identity, never by
    an equal one's."""
    cache = ModelCache()
    short = cache.get(ENDPOINT, {"temperature": 0.2}, 5.0)
    assert short.request_timeout == 5.0
    assert cache.get(ENDPOINT, {"temperature": 0.2}, 5.0) is short
    long = cache.get(ENDPOINT, {"temperature": 0.2}, 60.0)
    assert long is not short and long.request_timeout == 60.0
    untimed = cache.get(ENDPOINT, {"temperature": 0.2})
    assert untimed not in (short, long) and untimed.request_timeout is None
    other = cache.get("other@http://127.0.0.1:9/v1", {"temperature": 0.2}, 5.0)
    assert other.model_name == "other" and short.model_name == "m"
    warmer = cache.get(ENDPOINT, {"temperature": 0.3}, 5.0)
    assert warmer.temperature == 0.3 and short.temperature == 0.2
    both = {"temperature": 0.2, "max_tokens": 7}
    assert cache.get(ENDPOINT, both) is cache.get(ENDPOINT, dict(reversed(both.items())))
    # A value that cannot be hashed is keyed as before, on every call.
    kwargs = {"model_kwargs": {"top_p": 0.5}}
    assert cache.get(ENDPOINT, kwargs) is cache.get(ENDPOINT, {"model_kwargs": {"top_p": 0.5}})
    # Instances: a timeout is their owner's, and two alike are two models.
    a, b = fake("A"), fake("A")
    from_a = cache.get(a, {"temperature": 0.1}, 5.0)
    assert cache.get(a, {"temperature": 0.1}, 60.0) is from_a
    assert cache.get(b, {"temperature": 0.1}, 5.0) is not from_a


def test_a_remembered_key_gives_each_loop_its_own_model():
    """A remembered key names no loop: a model built under one ``asyncio.run`` is not handed
    to the next, whose loop its client cannot serve."""
    cache = ModelCache()

    async def ask() -> tuple[object, object]:
        return cache.get(ENDPOINT, {"temperature": 0.2}, 5.0), cache.get(
            ENDPOINT, {"temperature": 0.2}, 5.0
        )

    first, same = asyncio.run(ask())
    second, _ = asyncio.run(ask())
    assert same is first and second is not first
    assert second.http_async_client is not first.http_async_client
    assert cache.get(ENDPOINT, {"temperature": 0.2}, 5.0) not in (first, second)  # sync calls


def test_the_remembered_model_keys_are_bounded(monkeypatch):
    """A run context per request may ask for a new temperature each time (`moa serve`)."""
    from langgraph_moa.providers import _models

    monkeypatch.setattr(_models, "KEYS_KEPT", 8)
    cache = ModelCache(size=4)
    for i in range(30):
        cache.get(ENDPOINT, {"temperature": i / 100})
        assert len(cache._keys) <= 8
    assert cache.get(ENDPOINT, {"temperature": 0.29}).temperature == 0.29


def test_a_remembered_key_keeps_the_parameters_it_was_asked_with():
    """`get` remembered the caller's own parameter dict with the key made of its values: a
    caller that then changed its dict had a later ask for the old values, once the model
    was gone from the bucket (evicted, or another loop), built with the new ones."""
    cache = ModelCache(size=1)
    params = {"temperature": 0.2}
    assert cache.get(ENDPOINT, params).temperature == 0.2
    params["temperature"] = 0.9  # the caller's dict, reused for another call
    cache.get(ENDPOINT, {"temperature": 0.5})  # the first model leaves the bucket
    assert cache.get(ENDPOINT, {"temperature": 0.2}).temperature == 0.2


def test_a_provider_row_changed_after_a_models_first_call_decides_its_next_timeout(monkeypatch):
    # The cache remembered a string spec's parameters with the call timeout as the provider
    # table gave it at the first call: a row registered later (here: a provider's models no
    # longer on the package's client) went on getting the old decision.
    from dataclasses import replace

    from langgraph_moa.providers import register_provider
    from langgraph_moa.providers._table import provider_of

    monkeypatch.setenv("OPENAI_API_KEY", "sk-model-cache-test-0123456789")
    shipped = provider_of("openai")
    cache = ModelCache()
    assert cache.get("openai:gpt-4o-mini", {}, 5.0).request_timeout == 5.0
    register_provider(replace(shipped, shares_http_client=False))
    try:
        own = cache.get("openai:gpt-4o-mini", {}, 5.0)
    finally:
        register_provider(shipped)
    assert own.request_timeout is None  # its owner's client, not the package's timeout

import threading

from langgraph_moa._lru import BoundedLRU


def test_the_least_recently_used_entry_goes_first():
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # now the most recent: "b" is the oldest
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (1, None, 3, 2)
    assert lru.put("a", 9) == 9 and lru.get("a") == 9 and len(lru) == 2


def test_setdefault_makes_one_value_for_threads_asking_at_once():
    lru: BoundedLRU[str, object] = BoundedLRU(4)
    made, got = [], []
    start = threading.Barrier(8)

    def ask():
        start.wait()
        got.append(lru.setdefault("k", lambda: made.append(1) or object()))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and len({id(v) for v in got}) == 1
    for key in "wxyz":
        lru.setdefault(key, object)
    assert lru.get("k") is None and len(lru) == 4  # bounded like put

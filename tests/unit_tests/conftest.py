import pytest
from pytest_socket import disable_socket, enable_socket

from tests.fakes import CallLog, FakeChat


@pytest.fixture(autouse=True)
def no_network():
    """Unit tests never open a network socket (Unix sockets stay allowed for asyncio)."""
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()


@pytest.fixture
def log() -> CallLog:
    return CallLog()


@pytest.fixture
def fake(log: CallLog):
    made: list[FakeChat] = []

    def make(label: str, **kwargs) -> FakeChat:
        made.append(FakeChat(label=label, log=log, **kwargs))
        return made[-1]

    yield make
    for model in made:  # hung sync calls end with their test, not 30 s into another one
        model.release()

"""Child process: one llama.cpp OpenAI-compatible server that dies with its parent.

Runs llama-cpp-python's own FastAPI app under uvicorn. A watchdog thread exits the process
as soon as the parent is gone (killed, crashed, Ctrl-C), so no server is ever orphaned, even
when the parent could not run its clean-up.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.5)


def main() -> None:
    """Start the server described by the JSON settings in argv[1]."""
    settings = json.loads(sys.argv[1])
    threading.Thread(target=_watch_parent, args=(settings.pop("parent_pid"),), daemon=True).start()

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    server = ServerSettings(host=settings["host"], port=settings["port"], interrupt_requests=False)
    app = create_app(server_settings=server, model_settings=[ModelSettings(**settings["model"])])
    uvicorn.run(app, host=server.host, port=server.port, log_level="warning")


if __name__ == "__main__":
    main()

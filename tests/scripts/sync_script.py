"""A plain script using tyqw.SyncSession, run as a subprocess by tests/test_sync.py.

The simulator is the parent's: DASHSCOPE_API_KEY, DASHSCOPE_BASE_URL and DASHSCOPE_APP_ID
name it. Modes:

``plain``   two turns (send, then stream), and a second SyncSession left open on purpose;
            at exit it prints the threads still alive after tyqw's own exit handling.
``send``    / ``stream``: one slow turn that prints ``started`` at its first message and
            waits for Ctrl-C (SIGINT), then prints what ``last_reply`` kept, as JSON.
"""

import atexit
import json
import os
import sys
import threading

# Registered before tyqw is imported, so it runs after tyqw's exit handlers (LIFO).
atexit.register(lambda: print("threads at exit:", [t.name for t in threading.enumerate()]))

from tyqw import Message, SyncSession  # noqa: E402


def started(message: Message) -> None:
    if message.delta and not getattr(started, "done", False):
        started.done = True  # type: ignore[attr-defined]
        print("started", flush=True)


def main(mode: str) -> None:
    app_id = os.environ["DASHSCOPE_APP_ID"]
    if mode == "plain":
        with SyncSession(app_id, name="plain") as session:
            print(session.send("你好，我叫小明").text)
            print("".join(m.delta for m in session.stream("我叫什么名字？")))
        left_open = SyncSession(app_id, name="left-open")
        print(left_open.send("hello").finish_reason)
        return
    session = SyncSession(app_id, name=mode)
    try:
        if mode == "send":
            session.on("message", started)
            session.send("tell me a long story about the West Lake and the Leifeng Pagoda")
        else:
            for message in session.stream("tell me a long story about the Longjing tea hills"):
                started(message)
        print("not interrupted")
    except KeyboardInterrupt:
        reply = session.last_reply
        assert reply is not None
        threads = [t.name for t in threading.enumerate()]
        print(
            json.dumps(
                {"text": reply.text, "finish_reason": reply.finish_reason, "threads": threads}
            )
        )
    finally:
        session.close()


if __name__ == "__main__":
    main(sys.argv[1])

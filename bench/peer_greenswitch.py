"""Baseline (b) of ``bench/run.py``: the bench's short IVR on greenswitch's ``OutboundESLServer``.

After greenswitch's own ``connect``: myevents, linger, answer, playback of a prompt,
play_and_get_digits, bridge to user 1001 when the caller pressed 1, hangup; the server
sends ``exit`` when the app returns. The same prompt, digit collection and dial string
as fsapp's bench module.

    python bench/peer_greenswitch.py PORT

Prints ``ready 127.0.0.1:PORT`` on stderr once listening; SIGTERM stops it (exit 0).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import gevent
from greenswitch.esl import OutboundESLServer, OutboundSessionHasGoneAway

PROMPT = str(Path(__file__).resolve().parents[1] / "sounds" / "fa" / "menu" / "main.wav")
DIAL = "{originate_timeout=30}user/1001@${domain_name}"


class MenuApp:
    """One call: greenswitch builds it with the session and runs ``run`` in a greenlet."""

    def __init__(self, session: object) -> None:
        self.session = session

    def run(self) -> None:
        s = self.session
        try:
            s.myevents()
            s.linger()
            s.answer()
            s.playback(PROMPT)
            digit = s.play_and_get_digits(1, 1, 1, 5000, "#", PROMPT, "silence_stream://250", "bench_choice",
                                          "^(1)$", 3000)
            if digit == "1":
                s.bridge(DIAL)
            s.hangup()
        except OutboundSessionHasGoneAway:
            pass


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) == 0:
        print("usage: peer_greenswitch.py PORT (greenswitch cannot bind port 0)", file=sys.stderr)
        return 2
    port = int(argv[0])
    server = OutboundESLServer(bind_address="127.0.0.1", bind_port=port, application=MenuApp,
                               max_connections=1_000_000)
    listener = gevent.spawn(server.listen)
    while not server._running and not listener.dead:
        gevent.sleep(0.01)
    if listener.dead:
        print(f"greenswitch could not listen on {port}", file=sys.stderr)
        return 1
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    print(f"ready 127.0.0.1:{server.bound_port}", file=sys.stderr, flush=True)
    listener.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

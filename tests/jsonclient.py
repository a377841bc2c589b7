"""An application that speaks hsflowd's JSON: sends each line of standard input as one UDP
datagram to HOST PORT (as it is: bad lines stay bad), REPEAT times over, then prints how
many it sent.  Run by the json {} tests inside their namespace, as a process of its own:

    python3 jsonclient.py 127.0.0.1 36343 [REPEAT] < messages
"""

import socket
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    lines = [line.rstrip(b"\n") for line in sys.stdin.buffer if line.strip()]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sent = 0
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for _ in range(repeat):
            for line in lines:
                try:
                    s.sendto(line, (host, port))
                    sent += 1
                except (ConnectionRefusedError, BlockingIOError):
                    pass
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())

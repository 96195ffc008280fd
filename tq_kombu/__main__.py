"""``python -m tq_kombu keygen [ID]``: print a fresh encryption key line."""

from __future__ import annotations

import sys

from .errors import ConfigurationError
from .keyring import ENV_VAR, generate_key_line


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "keygen" or len(argv) > 2:
        print("usage: python -m tq_kombu keygen [KEY_ID]", file=sys.stderr)
        return 2
    try:
        line = generate_key_line(argv[1] if len(argv) == 2 else None)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(line)
    print(f"# export {ENV_VAR}={line!r}  (put the new key first to rotate)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

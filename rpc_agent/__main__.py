"""`python3 -m rpc_agent [--root DIR]`: serve the JSON-lines protocol on stdin/stdout."""
import sys

from .agent import main

if __name__ == "__main__":
    sys.exit(main())

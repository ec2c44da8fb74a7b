"""``python -m picker3d ...``: the engine command line (what Scipion protocols run)."""
from picker3d.engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

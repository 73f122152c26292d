"""``python -m sampo_engine`` (also what ``torchrun -m sampo_engine`` runs)."""

from sampo_engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

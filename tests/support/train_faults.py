"""What tests/unit/train/test_train_faults.py and tests/integration/test_train_faults_commands.py
share."""

from __future__ import annotations


TINY_ARGS = ["--width", "0.125", "--batch-size", "2", "--device", "cpu", "--no-tensorboard", "--in-memory"]


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


"""A normal run prints no warning it could have avoided: the entry points import every library a run
uses (diffusers, peft, compressai, Lightning, pyiqa's dependencies) without a word on stderr."""

import os
import subprocess
import sys


def test_importing_the_entry_points_prints_nothing():
    result = subprocess.run([sys.executable, "-c", "import train, evaluate"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "default"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"importing the entry points printed:\n{result.stderr}"

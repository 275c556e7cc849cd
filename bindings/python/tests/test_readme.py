"""The README's Python quick start runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / 'README.md'


def test_the_python_quick_start_resolves_a_hundred_objects_in_one_task() -> None:
    section = README.read_text().split('## Python quick start', 1)[1]
    code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == '102400 bytes resolved at lab in 1 task(s)'

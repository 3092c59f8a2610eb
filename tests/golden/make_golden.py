"""Record the golden outputs of the behaviour-unchanged test (tests/golden/test_golden.py).

Run it ONLY when a change of behaviour is intended and reviewed, never to make the test pass
after a refactor:

    python3 tests/golden/make_golden.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from golden_cases import CASES, GOLDEN, machine, run_case, save_case  # noqa: E402

if __name__ == "__main__":
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            save_case(name, run_case(name, Path(tmp)))
        print(f"recorded {name}")
    (GOLDEN / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")

"""The README's two commands and its usage example stay true."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_command():
    demo_cmd, test_cmd = _commands()
    assert demo_cmd.endswith("fastml demo")
    ci = (ROOT / ".ci" / "run").read_text()
    for part in test_cmd.split("&&"):
        part = part.strip().replace("pip install", "pip install -q")
        assert part in ci, f"{part!r} from README is not what .ci/run runs"


def test_demo_command_runs_and_reports_parity(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastml.cli", "demo", "--rows", "300"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "predict==sklearn" in proc.stdout and "median latency" in proc.stdout
    native_rows = [l for l in proc.stdout.splitlines() if re.search(r"\snative\s+(predict|decision)", l)]
    assert native_rows and all("100.00%" in l or " - " in l for l in native_rows), proc.stdout
    int8 = [l for l in proc.stdout.splitlines() if "int8 (" in l]
    assert len(int8) == 2 and all("labels agree" in l and "smaller" in l for l in int8), proc.stdout


def test_usage_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "digits.onnx").exists()

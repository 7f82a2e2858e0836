"""README.md's code runs as written: every Python block executes (in a fresh interpreter with the
suite's 8 virtual CPU devices), and every shell command names an existing module, make target,
flags, config file, variant and config keys."""

import configparser
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
CONTINUING = "# continuing the block above"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
SHELL_LANGUAGES = ("bash", "sh")
PYTHON_COMMAND = re.compile(r"\bpython -m (\S+)(.*)")
MAKE_COMMAND = re.compile(r"^make (\w+)")


def readme_blocks(text: str) -> list[tuple[str, int, str]]:
  """(language, first line number, code) of every fenced block of `text`."""
  return [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
          for m in FENCE.finditer(text)]


def python_programs(blocks) -> list[tuple[int, str]]:
  """(line, program) per Python block; a block starting with CONTINUING runs after the one above.

  Raises:
    ValueError: for a first Python block that claims to continue one.
  """
  programs = []
  for language, line, code in blocks:
    if language != "python":
      continue
    if code.startswith(CONTINUING):
      if not programs:
        raise ValueError(f"README.md:{line}: '{CONTINUING}' but no Python block is above")
      code = programs[-1][1] + "\n" + code
    programs.append((line, code))
  return programs


def _logical_lines(code: str) -> list[str]:
  """The lines of a shell block, with backslash continuations and quoted newlines joined."""
  lines = []
  for text in code.replace("\\\n", " ").splitlines():
    if lines and lines[-1].count('"') % 2:
      lines[-1] += " " + text
    else:
      lines.append(text)
  return lines


def _arguments(rest: str, quoted: bool) -> list[str]:
  """The arguments of one command: up to the first `&`, `;` or `|` (or the closing `"` of a
  `quoted` command), without comments. Shell variables ($i of a `for` loop) take the value 0."""
  rest = re.sub(r"\$\w+", "0", rest.split('"')[0] if quoted else rest)
  lexer = shlex.shlex(rest, posix=True, punctuation_chars="&;|")
  lexer.whitespace_split, lexer.commenters = True, "#"
  arguments = []
  for token in lexer:
    if token[0] in "&;|":
      break
    arguments.append(token)
  return arguments


def shell_commands(blocks) -> tuple[list[dict], list[tuple[int, str]]]:
  """The `python -m` commands ({"line", "module", "argv"}) and (line, make target) pairs."""
  commands, targets = [], []
  for language, line, code in blocks:
    if language not in SHELL_LANGUAGES:
      continue
    for text in _logical_lines(code):
      for match in PYTHON_COMMAND.finditer(text):
        quoted = text[:match.start()].count('"') % 2 == 1  # --command="... python -m ..."
        commands.append(dict(line=line, module=match.group(1),
                             argv=_arguments(match.group(2), quoted)))
      if make := MAKE_COMMAND.match(text.strip()):
        targets.append((line, make.group(1)))
  return commands, targets


def _subprocess_env() -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  return env


with open(README) as f:
  BLOCKS = readme_blocks(f.read())
PROGRAMS = python_programs(BLOCKS)
COMMANDS, MAKE_TARGETS = shell_commands(BLOCKS)


def test_the_readme_has_the_blocks_this_test_reads():
  assert len(PROGRAMS) >= 10
  assert len(COMMANDS) >= 25
  assert {c["module"] for c in COMMANDS} >= {"experiments.pretrain", "experiments.memory"}
  assert {t for _, t in MAKE_TARGETS} >= {"pretrain", "test", "notebooks"}


@pytest.mark.parametrize("line,program", PROGRAMS, ids=[f"line{line}" for line, _ in PROGRAMS])
def test_python_block_runs(line, program, tmp_path):
  result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=_subprocess_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, f"README.md:{line}:\n{result.stderr[-3000:]}"


def _parse_errors(commands: list[dict]) -> list[str | None]:
  """One error message (or None) per command, from tests/readme_commands.py."""
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tests", "readme_commands.py")], cwd=ROOT,
      env=_subprocess_env(), input=json.dumps(commands), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.splitlines()[-1])


def test_every_command_parses_with_its_experiments_flags():
  errors = _parse_errors(COMMANDS)
  failed = [f"README.md:{c['line']}: python -m {c['module']} {shlex.join(c['argv'])}\n  {e}"
            for c, e in zip(COMMANDS, errors) if e]
  assert not failed, "\n".join(failed)


def test_every_make_target_exists():
  with open(os.path.join(ROOT, "Makefile")) as f:
    defined = set(re.findall(r"^(\w+):", f.read(), re.M))
  assert not [(line, t) for line, t in MAKE_TARGETS if t not in defined]


def test_a_broken_command_is_caught():
  """The checker itself: an unknown module, flag, variant and config key, a section the
  experiment does not read and a value outside its domain are each reported."""
  broken = [dict(module="experiments.no_such", argv=[]),
            dict(module="experiments.pretrain", argv=["--config=configs/pretrain.py",
                                                      "--workdirr=/tmp/x"]),
            dict(module="experiments.pretrain", argv=["--config=configs/gpt2.py:nope",
                                                      "--workdir=/tmp/x"]),
            dict(module="experiments.pretrain", argv=["--config=configs/pretrain.py",
                                                      "--config.train.stepz=3",
                                                      "--workdir=/tmp/x"]),
            dict(module="experiments.pretrain", argv=["--config=configs/pretrain.py",
                                                      "--workdir=/tmp/x"]),
            dict(module="experiments.gem", argv=["--config=configs/pretrain.py",
                                                 "--workdir=/tmp/x"]),
            dict(module="experiments.pretrain", argv=["--config=configs/pretrain.py",
                                                      "--config.opt.lr=-1", "--workdir=/tmp/x"])]
  errors = _parse_errors(broken)
  assert [e is None for e in errors] == [False, False, False, False, True, False, False], errors
  assert "workdirr" in errors[1] and "stepz" in errors[3]
  assert "'data' is read by no code of this experiment" in errors[5]  # a section gem never reads
  assert "opt.lr must be > 0" in errors[6]


def test_continuation_and_command_extraction():
  text = ("```python\nx = 1\n```\n```python\n# continuing the block above\ny = x\n```\n"
          "```bash\nfor i in 0 1; do\n  python -m experiments.a --p=$i \\\n    --q=2 &  # c\n"
          "done; wait\nmake test   # note\nssh h --command=\"\n  cd d && python -m experiments.b "
          "--r=1\"\n```\n")
  blocks = readme_blocks(text)
  assert python_programs(blocks)[1] == (4, "x = 1\n\n# continuing the block above\ny = x\n")
  commands, targets = shell_commands(blocks)
  assert [(c["module"], c["argv"]) for c in commands] == [
      ("experiments.a", ["--p=0", "--q=2"]), ("experiments.b", ["--r=1"])]
  assert targets == [(8, "test")]


def test_notebooks_install_from_the_package_url():
  """The Colab install cell takes the repository URL setup.cfg's metadata records (none yet)."""
  metadata = configparser.ConfigParser()
  metadata.read(os.path.join(ROOT, "setup.cfg"))
  url = metadata["metadata"].get("url", "")
  for path in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")):
    with open(path) as f:
      text = f.read()
    assert "OWNER" not in text, path
    code = "".join("".join(c["source"]) for c in json.loads(text)["cells"]
                   if c["cell_type"] == "code")
    assert f"\nREPO_URL = {json.dumps(url)}\n" in code, path

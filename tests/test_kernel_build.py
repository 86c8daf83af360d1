"""The fused kernel's build: cached under a name that changes with everything that changes the binary, announced in
one line before the first build, and replaced by the composite path with one clear warning when it cannot be built."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sasa import fused_block_attention

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from conftest import padded_batch, tiny_config
    from sasa import SasaModel

    model = SasaModel(tiny_config()).eval()
    input_ids, attention_mask = padded_batch([45, 30])
    with torch.no_grad():
        sparse = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        model.set_attn_implementation("eager")
        dense = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert (sparse - dense).abs().max() < 1e-5
    from sasa import fused_block_attention
    print("fused" if fused_block_attention.available() else "composite")
    """
)
TESTS = os.path.dirname(__file__)


def run_script(tmp_path, **env_overrides):
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", **env_overrides)
    return subprocess.run([sys.executable, str(script), TESTS], env=env, capture_output=True, text=True, timeout=600)


def test_build_name_changes_with_everything_that_changes_the_binary(monkeypatch):
    name = fused_block_attention.build_name()
    assert name == fused_block_attention.build_name()
    changes = {
        "torch version": lambda: monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other"),
        "compiler": lambda: monkeypatch.setenv("CXX", "/opt/another-compiler/c++"),
        "source": lambda: monkeypatch.setattr(fused_block_attention, "_SOURCE", fused_block_attention._SOURCE + " "),
        "flags": lambda: monkeypatch.setattr(fused_block_attention, "_CFLAGS", ["-O2"]),
        "cpu": lambda: monkeypatch.setattr(fused_block_attention, "_cpu_flags", lambda: "flags : sse2"),
    }
    for what, change in changes.items():
        change()
        assert fused_block_attention.build_name() != name, what
        monkeypatch.undo()
        assert fused_block_attention.build_name() == name


def test_without_a_compiler_one_warning_line_points_at_the_users_call(tmp_path):
    result = run_script(tmp_path, CXX=str(tmp_path / "no-such-compiler"),
                        TORCH_EXTENSIONS_DIR=str(tmp_path / "extensions"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["composite"]
    warning, source_line = result.stderr.strip().splitlines()  # warnings prints the message and the user's line
    assert warning.startswith(f"{tmp_path / 'user_script.py'}:") and "RuntimeWarning" in warning, warning
    assert "no C++ compiler" in warning and "SASA_KERNEL_VERBOSE=1" in warning
    assert "model(input_ids=input_ids" in source_line


def test_a_failing_build_is_one_warning_line_and_its_log_only_on_request(tmp_path):
    compiler = tmp_path / "broken-c++"
    compiler.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo broken 1.0; exit 0; }\n'
                        'echo "fatal error: this compiler is broken" >&2; exit 1\n')
    compiler.chmod(0o755)
    env = dict(CXX=str(compiler), TORCH_EXTENSIONS_DIR=str(tmp_path / "extensions"))
    quiet = run_script(tmp_path, **env)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout.split() == ["composite"]
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 3, lines  # the build announcement, the warning and the user's line
    assert lines[0].startswith("SASA: compiling") and "the C++ build failed" in lines[1]
    assert "this compiler is broken" not in quiet.stderr and "-march" not in quiet.stderr
    verbose = run_script(tmp_path, SASA_KERNEL_VERBOSE="1", **dict(env, TORCH_EXTENSIONS_DIR=str(tmp_path / "v")))
    assert verbose.returncode == 0 and "this compiler is broken" in verbose.stdout + verbose.stderr


@pytest.mark.slow
@pytest.mark.skipif(not fused_block_attention.available(), reason="needs a C++ compiler")
def test_first_build_is_announced_in_one_line_then_cached(tmp_path):
    extensions = str(tmp_path / "extensions")
    first = run_script(tmp_path, TORCH_EXTENSIONS_DIR=extensions)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.split() == ["fused"]
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("SASA: compiling the fused CPU attention kernel"), lines
    assert extensions in lines[0] and "SASA_FUSED_KERNEL=0" in lines[0]
    again = run_script(tmp_path, TORCH_EXTENSIONS_DIR=extensions)
    assert again.returncode == 0 and again.stdout.split() == ["fused"] and again.stderr == ""

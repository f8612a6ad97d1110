"""`platform/` is a source folder, never a package shadowing the standard library."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_folder_has_no_init():
    assert not (REPO / "platform" / "__init__.py").exists()


def test_import_platform_from_repo_root_is_stdlib():
    code = "import platform, sysconfig; print(platform.__file__); print(platform.system())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert Path(out[0]).parent == Path(__import__("sysconfig").get_paths()["stdlib"])
    assert out[1] == "Linux"


def test_client_imports_without_heavy_dependencies():
    code = ("import sys, ember; ember.Client; "
            "heavy = ('ray', 'torch', 'vllm', 'transformers');"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

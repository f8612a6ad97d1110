"""Inside a Ray worker whose working_dir is the repo, `platform` is still the stdlib.

The working_dir is uploaded at the job level, as `ray job submit --working-dir .`
does: a separate driver joins the test cluster with that runtime_env.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

DRIVER = """
import json, sys, ray
ray.init(address=sys.argv[1], runtime_env={"working_dir": sys.argv[2],
         "excludes": [".venv", ".git", ".gpu", ".gpu-serve"]}, log_to_driver=False)

@ray.remote
def where_is_platform():
    import os, platform, ember
    return [platform.__file__, platform.system(), os.getcwd(),
            os.path.isdir(os.path.join(os.getcwd(), "platform", "ember"))]

print(json.dumps(ray.get(where_is_platform.remote())))
"""


def test_import_platform_in_ray_worker_with_repo_working_dir(ray_cluster):
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    out = subprocess.run([sys.executable, "-c", DRIVER, address, str(REPO)], cwd="/",
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    path, system, cwd, has_repo_layout = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(path).parent == Path(sysconfig.get_paths()["stdlib"])
    assert system == "Linux"
    assert has_repo_layout and Path(cwd) != REPO  # ran inside the uploaded working_dir

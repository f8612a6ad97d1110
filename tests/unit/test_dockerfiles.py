"""The images the Kubernetes manifests use: Dockerfiles checked without a Docker engine.

No Docker engine runs on the CI machine, so the images are not built here; this
test reads the Dockerfiles the way `docker build` would start to: the base image
pins the Ray and Python versions Ember pins, every COPY source exists, and the
install names extras that pyproject.toml defines.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continued lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_matches_the_project(path):
    steps = instructions(path)
    known = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "ARG", "USER", "LABEL", "EXPOSE"}
    assert {word for word, _ in steps} <= known
    assert steps[0][0] == "FROM"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    ray_pin = next(d for d in pyproject["project"]["optional-dependencies"]["platform"]
                   if d.startswith("ray["))
    ray_version = ray_pin.split("==")[1]
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray_version)}-{python}-(cpu|gpu)",
                        steps[0][1]), steps[0][1]
    for word, rest in steps:
        if word == "COPY":
            *sources, _ = [a for a in rest.split() if not a.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repo"
    extras = set(pyproject["project"]["optional-dependencies"])
    installs = [rest for word, rest in steps if word == "RUN"]
    named = set(re.findall(r'-e "\.\[([a-z,]+)\]"', " ".join(installs)))
    assert named and all(set(n.split(",")) <= extras for n in named)
    flavour = steps[0][1].rsplit("-", 1)[1]
    assert flavour in named  # the gpu image installs [gpu], the cpu image [cpu]


def test_the_manifests_use_the_gpu_image():
    text = "\n".join(p.read_text() for p in (REPO / "cluster" / "k8s").glob("*.yaml"))
    images = set(re.findall(r"image: (\S+)", text))
    assert images == {"ember/ember-gpu:0.1.0"}

"""Static checks of templates/match_corpora/Dockerfile and requirements.txt (no Docker needed).

Pinned base images, the stack installed at build time and nothing at launch, the launcher's py file
present, the worker ENTRYPOINT kept, and a lock that pins every stack package of setup.py with ==.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from beam_jobs.commands.template import SDK_IMAGE_BUILD_ARG, SDK_IMAGE_ENV

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO / "templates" / "match_corpora"
DOCKERFILE = (TEMPLATE_DIR / "Dockerfile").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    lines = [ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args(instr: str) -> list[str]:
    return [rest for word, rest in _instructions() if word == instr]


def _env() -> dict[str, str]:
    env = {}
    for rest in _args("ENV"):
        key, _, value = rest.partition("=")
        env[key.strip()] = value.strip().strip('"')
    return env


def _setup() -> tuple[list[Requirement], str]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    stack = next(ast.literal_eval(n.value) for n in tree.body
                 if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "STACK" for t in n.targets))
    python_requires = re.search(r'python_requires="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    return [Requirement(s) for s in stack], python_requires


def _images() -> list[str]:
    images = [rest.split()[0] for rest in _args("FROM")]
    images += re.findall(r"--from=(\S+)", " ".join(_args("COPY")))
    return images


def _lock() -> dict[str, str]:
    pins = {}
    for line in (TEMPLATE_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;\[\]]+)", line.strip())
            assert match, f"not an exact name==version pin: {line!r}"
            name = canonicalize_name(match.group(1))
            assert name not in pins, f"{name} pinned twice"
            pins[name] = match.group(2)
    return pins


def test_base_images_are_pinned_to_exact_versions():
    images = _images()
    assert len(images) == 2, images
    for image in images:
        assert "$" not in image, f"{image}: pinned in the file, not through a build arg"
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and "/" not in tag, f"{image} has no tag"
        assert tag != "latest", image
        assert re.fullmatch(r"\d[\w.-]*", tag), f"{image}: tag {tag!r} is not an exact version"
        if "@" in image:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.partition("@")[2]), image


def test_worker_base_matches_setup_py_beam_and_python():
    stack, python_requires = _setup()
    beam = next(r for r in stack if canonicalize_name(r.name) == "apache-beam")
    beam_version = str(beam.specifier).removeprefix("==")
    python = re.match(r">=(\d+\.\d+)", python_requires).group(1)
    assert _args("FROM")[0].split()[0].partition("@")[0] == f"apache/beam_python{python}_sdk:{beam_version}"
    assert re.search(rf"python{python.replace('.', '')}-template-launcher-base:", " ".join(_args("COPY")))


def test_launcher_binary_is_copied_to_its_fixed_path():
    assert any(rest.endswith("/opt/google/dataflow/python_template_launcher /opt/google/dataflow/"
                             "python_template_launcher") and "--from=gcr.io/dataflow-templates-base/" in rest
               for rest in _args("COPY"))


def test_entrypoint_is_the_beam_worker_boot_and_no_cmd():
    assert _args("ENTRYPOINT") == ['["/opt/apache/beam/boot"]']
    assert _args("CMD") == []


def test_nothing_is_pip_installed_at_launch():
    env = _env()
    assert env.get("PIP_NO_DEPS") == "True"
    # No launch-time install or staging: the stack and the project are in the image.
    assert "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in env
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in env
    assert "FLEX_TEMPLATE_PYTHON_EXTRA_PACKAGES" not in env
    for instr in ("ENTRYPOINT", "CMD"):
        assert not any("pip" in rest for rest in _args(instr))
    # PIP_NO_DEPS is set after every pip install, so it cannot starve the build of dependencies.
    order = [(w, r) for w, r in _instructions()]
    last_pip = max(i for i, (w, r) in enumerate(order) if w == "RUN" and "pip install" in r)
    no_deps = next(i for i, (w, r) in enumerate(order) if w == "ENV" and r.startswith("PIP_NO_DEPS"))
    assert no_deps > last_pip


def test_the_stack_is_installed_from_the_lock_then_the_project_without_deps():
    runs = " && ".join(_args("RUN"))
    assert "pip install --no-cache-dir -r /template/requirements.txt" in runs
    assert re.search(r"pip install --no-cache-dir --no-deps /tmp/corpus-matcher", runs)
    copies = " ".join(_args("COPY"))
    assert "templates/match_corpora/requirements.txt /template/requirements.txt" in copies
    sources = ("setup.py", "pyproject.toml", "beam_jobs", "transforms", "templates/match_corpora/main.py")
    for source in sources:
        assert source in copies, source
        assert (REPO / source).exists(), source


def test_py_file_points_at_the_copied_shim():
    py_file = _env()["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    copies = {rest.split()[-1]: rest.split()[:-1] for rest in _args("COPY") if "--from" not in rest}
    assert py_file in copies, f"{py_file} is not a COPY destination"
    (source,) = copies[py_file]
    assert (REPO / source).is_file()
    assert source == "templates/match_corpora/main.py"


def test_image_knows_its_own_reference_for_the_workers():
    assert f"{SDK_IMAGE_BUILD_ARG}=" in " ".join(_args("ARG"))
    assert _env()[SDK_IMAGE_ENV] == "${" + SDK_IMAGE_BUILD_ARG + "}"


def test_gpu_layer_pins_the_stack_tensorflow_with_cuda():
    stack, _ = _setup()
    tf = next(r for r in stack if canonicalize_name(r.name) == "tensorflow")
    runs = " ".join(_args("RUN"))
    assert "GPU=0" in " ".join(_args("ARG"))
    assert f'"tensorflow[and-cuda]{tf.specifier}"' in runs
    assert "-c /template/requirements.txt" in runs  # the CUDA wheels may not move the CPU stack


def test_lock_pins_every_stack_package_exactly_and_within_setup_py():
    stack, _ = _setup()
    pins = _lock()
    for req in stack:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} missing from requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"
        if str(req.specifier).startswith("=="):
            assert f"=={pins[name]}" == str(req.specifier)


def test_lock_has_no_project_or_dev_tools():
    pins = _lock()
    for name in ("corpus-matcher", "pytest", "ruff", "pip", "setuptools", "wheel"):
        assert name not in pins, name
    assert "-e " not in (TEMPLATE_DIR / "requirements.txt").read_text(encoding="utf-8")


def test_lock_generator_reads_the_same_stack():
    spec = importlib.util.spec_from_file_location("_gen_req", TEMPLATE_DIR / "generate_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stack, _ = _setup()
    assert [str(r) for r in module.stack_requirements()] == [str(r) for r in stack]
    header = (TEMPLATE_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines()[3]
    assert header == "# Top-level stack: " + ", ".join(str(r) for r in stack)

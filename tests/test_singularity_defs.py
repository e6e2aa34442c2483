"""The Singularity/Apptainer definition files build what the Docker images hold.

Apptainer is not installable here, so the files are parsed (spython's Singularity parser
for the sections, the header read here: spython only knows docker bootstraps) and checked
against docker/Dockerfile, docker/install.sh and pyproject.toml: the same base image, the
same install script with the same prefix, every file that script needs copied in, the
same labels and PATH, the CLI as the runscript.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

spython = pytest.importorskip("spython", reason="spython (PyPI) parses the .def files")
from spython.main.parse.parsers import SingularityParser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFS = ROOT / "singularity"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
INSTALL = ROOT / "docker" / "install.sh"
FROM_SOURCE = ("plankline.def", "plankline-debootstrap.def")
"""The .def files that install Plankline themselves (the other converts a built image)."""


class DefParser(SingularityParser):  # type: ignore[misc]
    """spython's parser, recording the bootstrap agent instead of refusing non-docker ones."""

    bootstrap: str | None = None

    def _check_bootstrap(self, line: str) -> None:
        match = re.match(r"bootstrap:\s*(\S+)", line, re.IGNORECASE)
        if match:
            self.bootstrap = match.group(1)


def header(path: Path) -> dict[str, str]:
    """``Key: value`` lines before the first section."""
    keys = {}
    for line in path.read_text().splitlines():
        if line.startswith("%"):
            break
        match = re.match(r"(\w+):\s*(.*\S)", line)
        if match:
            keys[match.group(1).lower()] = match.group(2)
    return keys


def sections(path: Path) -> dict[str, list[str]]:
    """Raw section bodies (spython drops %arguments and %help)."""
    out: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith("%"):
            name = line[1:].split()[0]
            out[name] = []
        elif name and line.strip():
            out[name].append(line.strip())
    return out


def parse(name: str) -> tuple[DefParser, object]:
    parser = DefParser(str(DEFS / name))
    (recipe,) = parser.recipe.values()
    return parser, recipe


def dockerfile_labels() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', text))


def build_args(name: str) -> dict[str, str]:
    """The %arguments defaults (``--build-arg`` overrides them)."""
    lines = sections(DEFS / name).get("arguments", [])
    return dict(line.split("=", 1) for line in lines)


def install_lines(recipe: object, args: dict[str, str]) -> list[list[str]]:
    """%post lines running docker/install.sh, ``{{ arg }}`` replaced as the build does."""
    return [
        shlex.split(re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: args[m.group(1)], line))
        for line in recipe.install  # type: ignore[attr-defined]
        if "docker/install.sh" in line
    ]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def test_the_docker_def_starts_from_the_dockerfiles_pinned_base_image() -> None:
    parser, recipe = parse("plankline.def")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert base, "docker/Dockerfile has no ARG BASE_IMAGE default"
    assert parser.bootstrap == "docker"
    assert recipe.fromHeader == base.group(1).lower()  # type: ignore[attr-defined]
    assert "@sha256:" in recipe.fromHeader  # type: ignore[attr-defined]


def test_the_debootstrap_def_builds_debian_bookworm_with_python311_and_venv() -> None:
    parser, _ = parse("plankline-debootstrap.def")
    keys = header(DEFS / "plankline-debootstrap.def")
    assert parser.bootstrap == "debootstrap"
    assert keys["osversion"] == "bookworm"  # Debian 12: python3 is CPython 3.11
    assert keys["mirrorurl"].startswith("http")
    assert {"python3", "python3-venv", "ca-certificates"} <= set(keys["include"].split())


def dockerfile_installs() -> dict[str, list[str]]:
    """The Dockerfile's install.sh runs, variant -> argv (line continuations joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    runs = [shlex.split(m) for m in re.findall(r"sh \S*docker/install\.sh ([^\n]*)", text)]
    return {option(argv, "--variant"): argv for argv in runs}


def files_install_reads(variant: str) -> set[str]:
    """Every path under SRC that docker/install.sh checks for or reads."""
    text = INSTALL.read_text()
    needed = re.search(r"for needed in (.*); do", text)
    assert needed, "install.sh no longer lists what it needs"
    paths = set(shlex.split(needed.group(1)))
    paths |= set(re.findall(r"\$src/([\w./$-]+)", text)) - {"$needed"}
    return {p.replace("$variant", variant) for p in paths}


@pytest.mark.parametrize("name", FROM_SOURCE)
def test_post_runs_the_docker_images_install_script_with_their_prefix(name: str) -> None:
    _, recipe = parse(name)
    args = build_args(name)
    (argv,) = install_lines(recipe, args)
    script = next(a for a in argv if a.endswith("docker/install.sh"))
    installs = dockerfile_installs()
    assert {"cpu", "cuda"} <= set(installs), "docker/Dockerfile does not run docker/install.sh"
    # the variant is a build argument (default: cuda, the GPU classifier image's)
    variant = option(argv, "--variant")
    assert variant == args["variant"] == "cuda"
    assert any("--variant {{ variant }}" in line for line in recipe.install)  # type: ignore[attr-defined]
    assert re.search(rf"[\s|]{variant}[|)]", INSTALL.read_text()), f"install.sh: {variant}?"
    assert (ROOT / "docker" / f"constraints-{variant}.txt").is_file()
    assert option(argv, "--prefix") == option(installs[variant], "--prefix") == "/opt/plankline"
    assert Path(script).parent == Path(argv[-1]) / "docker"


@pytest.mark.parametrize("name", FROM_SOURCE)
def test_files_copies_everything_install_sh_reads_from_the_source_tree(name: str) -> None:
    _, recipe = parse(name)
    (argv,) = install_lines(recipe, build_args(name))
    src = Path(argv[-1])
    copied = {line.split()[1]: line.split()[0] for line in recipe.files}  # type: ignore[attr-defined]
    for variant in ("cpu", "cuda"):  # either --build-arg variant
        for item in files_install_reads(variant):
            assert str(src / item) in copied, f"{name}: %files does not copy {item}"
    for target, source in copied.items():  # every %files source exists in the repository
        assert (ROOT / source).exists(), f"{name}: %files source {source} missing"
        assert target == f"{src}/{source}"


def test_the_docker_daemon_def_converts_a_dockerfile_target_of_this_version() -> None:
    parser, recipe = parse("plankline-docker-daemon.def")
    assert parser.bootstrap == "docker-daemon"
    image, tag = recipe.fromHeader.split(":")  # type: ignore[attr-defined]
    assert tag == VERSION
    target = image.removeprefix("plankline-")
    assert re.search(rf"^FROM \S+ AS {re.escape(target)}$", DOCKERFILE.read_text(), re.MULTILINE)
    assert not install_lines(recipe, {})  # the image already ran install.sh


@pytest.mark.parametrize("name", [*FROM_SOURCE, "plankline-docker-daemon.def"])
def test_runscript_is_the_cli_and_the_environment_finds_it(name: str) -> None:
    _, recipe = parse(name)
    assert recipe.cmd == 'exec plankline "$@"'  # type: ignore[attr-defined]
    assert recipe.test  # type: ignore[attr-defined]
    assert "plankline --help >/dev/null" in sections(DEFS / name)["test"]
    docker_path = re.search(r"ENV PATH=(\S+)", DOCKERFILE.read_text())
    assert docker_path
    assert f"PATH={docker_path.group(1).replace('${PATH}', '$PATH')}" in recipe.environ  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [*FROM_SOURCE, "plankline-docker-daemon.def"])
def test_labels_are_the_images_oci_labels_and_version(name: str) -> None:
    _, recipe = parse(name)
    labels = dict(line.split(None, 1) for line in recipe.labels)  # type: ignore[attr-defined]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "plankline"
    for key, value in dockerfile_labels().items():
        if key in labels:
            assert labels[key] == value, key
    if name in FROM_SOURCE:
        assert set(dockerfile_labels()) <= set(labels)
        assert labels["plankline.install"] == "docker/install.sh"


def test_readme_build_and_exec_commands_name_existing_files() -> None:
    readme = (DEFS / "README.md").read_text()
    builds = re.findall(r"singularity build (?:--\S+ )*(?:\S+=\S+ )*\S+\.sif (\S+\.def)", readme)
    assert set(builds) >= {f"singularity/{n}" for n in FROM_SOURCE}
    for path in builds:
        assert (ROOT / path).is_file(), path
    assert re.search(r"singularity exec --nv (-B \S+ )?plankline\.sif plankline run", readme)
    for template in (ROOT / "scripts" / "slurm").glob("*.sbatch"):
        assert "${PLANKLINE_EXEC:-singularity exec --nv plankline.sif}" in template.read_text()

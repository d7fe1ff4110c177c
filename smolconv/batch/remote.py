"""Entries run elsewhere: as a GitHub Actions matrix (`batch --matrix`), or as Hugging Face Jobs (`--on hf-jobs`).

smolconv keeps no scheduler of its own. Each entry is independent and its build content-keyed, so a CI matrix job or a
Hub job runs `smolconv batch FILE --only NAME` for one entry, and the skip against the published build record
makes a scheduled run that finds nothing new cost seconds.

A job gets the entry, defaults applied, as a recipe of its own in its environment (SMOLCONV_RECIPE), installs
smolconv (`--install`, default this version), builds the pinned llama.cpp (with CUDA for the card of a GPU flavor,
so verify and smoke run there), runs the entry and publishes it: its files live only as long as the container.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from smolconv import __version__
from smolconv.batch.recipe import Entry, Recipe
from smolconv.core.choices import JobFlavor
from smolconv.core.errors import SmolconvError
from smolconv.hub.jobs import JobSpec, JobState, SubmittedJob, job_states, submit
from smolconv.hub.repo import hub_token
from smolconv.llamacpp.toolchain import LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_SDIST_SHA256, RECIPE

# The images a job runs in: Python 3.11 with a C++ compiler for a CPU flavor; PyTorch's CUDA development image
# (nvcc, and Python 3.11 with torch already there) for a GPU one.
CPU_IMAGE = "python:3.11"
GPU_IMAGE = "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-devel"
DEFAULT_FLAVOR = JobFlavor.CPU_UPGRADE
DEFAULT_TIMEOUT = "3h"
# The labels that tie a job to its recipe and entry (`--status` lists jobs by them).
RECIPE_LABEL = "smolconv-recipe"
ENTRY_LABEL = "smolconv-entry"
VERSION_LABEL = "smolconv-version"
SCHEDULE = re.compile(r"^(@(hourly|daily|weekly|monthly|yearly|annually)|(\S+\s+){4}\S+)$")


def cache_key(backend: str = "cpu") -> str:
    """What a cached ~/.cache/smolconv is valid for: this smolconv and the llama.cpp pin (sdist and build recipe)."""
    return (f"smolconv-{__version__}-llama.cpp-{LLAMA_CPP_PYTHON_VERSION}-{LLAMA_CPP_SDIST_SHA256[:12]}-r{RECIPE}"
            f"-{backend}")


def matrix(entries: list[Entry]) -> dict:
    """The entries as a GitHub Actions matrix: `strategy.matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}`."""
    return {"include": [{"name": e.name, "formats": " ".join(map(str, e.formats)), "publish": e.publish or "",
                         "cache_key": cache_key()} for e in entries]}


# --------------------------------------------------------------------------------------------------
# Hugging Face Jobs


@dataclass
class JobsOptions:
    recipe: Recipe
    only: tuple[str, ...] = ()
    flavor: JobFlavor = DEFAULT_FLAVOR
    schedule: str | None = None        # cron, or @hourly … @yearly: a scheduled job per entry
    image: str | None = None           # default: CPU_IMAGE, or GPU_IMAGE on a GPU flavor
    install: str = f"smolconv=={__version__}"   # what pip installs in the job (a version, a wheel URL, git+…)
    timeout: str = DEFAULT_TIMEOUT
    namespace: str | None = None       # the user or organization the jobs run under (default: the token's)


def recipe_label(recipe: Recipe) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", recipe.path.stem)[:63] or "recipe"


def job_specs(options: JobsOptions) -> list[JobSpec]:
    """One job per entry; refused in one line when an entry cannot run in a job (local files, nothing published)
    or the schedule is not one the Hub takes."""
    if options.schedule is not None and not SCHEDULE.match(options.schedule.strip()):
        raise SmolconvError(f"--schedule {options.schedule!r} is not a schedule",
                            "use @hourly, @daily, @weekly, @monthly, @yearly or a cron line such as '0 3 * * 1'")
    entries = options.recipe.select(options.only)
    for entry in entries:
        _check_remote(options.recipe, entry)
    return [job_spec(options, entry) for entry in entries]


def job_spec(options: JobsOptions, entry: Entry) -> JobSpec:
    flavor = JobFlavor(options.flavor)
    # --setup: llama.cpp is built (with CUDA for the flavor's card) only when the entry is to be built, after its
    # build record was compared: a scheduled job that finds nothing new ends after the install.
    setup = "--setup" + (f" --cuda --cuda-arch {flavor.cuda_arch}" if flavor.gpu else "")
    script = "\n".join([
        "set -eu",
        # python:3.11 has compilers; an image without them gets Debian's (llama.cpp is built with CMake).
        "if ! command -v c++ >/dev/null; then apt-get update -qq && apt-get install -y -qq build-essential; fi",
        'pip install --no-cache-dir cmake "$SMOLCONV_INSTALL"',
        'printf "%s" "$SMOLCONV_RECIPE" > /tmp/recipe.toml',
        f"exec smolconv batch /tmp/recipe.toml --only {shlex.quote(entry.name)} --out /tmp/out {setup}",
    ])
    labels = {RECIPE_LABEL: recipe_label(options.recipe), ENTRY_LABEL: entry.name, VERSION_LABEL: __version__}
    env = {"SMOLCONV_INSTALL": options.install, "SMOLCONV_RECIPE": entry.to_toml(), "PYTHONUNBUFFERED": "1",
           "PIP_ROOT_USER_ACTION": "ignore"}
    return JobSpec(entry=entry.name, image=options.image or (GPU_IMAGE if flavor.gpu else CPU_IMAGE),
                   command=["bash", "-c", script], flavor=str(flavor), env=env, labels=labels,
                   timeout=options.timeout, schedule=options.schedule, namespace=options.namespace)


def submit_jobs(options: JobsOptions) -> list[SubmittedJob]:
    specs = job_specs(options)  # every entry checked before the first job is submitted
    token = hub_token()         # and the token found (read here, given to the API calls only)
    return [submit(spec, token=token) for spec in specs]


def entry_jobs(options: JobsOptions) -> list[JobState]:
    """The jobs (and schedules) of the recipe's entries, as the Hub lists them."""
    names = {e.name for e in options.recipe.select(options.only)}
    states = job_states({RECIPE_LABEL: recipe_label(options.recipe)}, ENTRY_LABEL, namespace=options.namespace)
    return [s for s in states if s.entry in names]


def _check_remote(recipe: Recipe, entry: Entry) -> None:
    where = f"{recipe.path}, entry {entry.name!r}"
    for key, place in (("source", entry.source), ("adapter", entry.adapter)):
        if place is not None and place.path is not None:
            raise SmolconvError(f"{where}: {key} {place.text} is a local directory, which a job cannot read",
                                f"upload it to the Hub and name its id as {key}, or run this entry here")
    if entry.cases is not None:
        raise SmolconvError(f"{where}: cases {entry.cases.name} is a local file, which a job cannot read",
                            "run this entry here, or drop cases from it")
    if not entry.publish:
        raise SmolconvError(f"{where}: it publishes nothing, and a job's files are gone when it ends",
                            "add publish = \"you/NAME\" to the entry")

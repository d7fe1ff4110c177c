"""Hugging Face Jobs: one container per job, on the Hub's hardware, through huggingface_hub's jobs API.

A JobSpec is everything `run_job` (or, with a schedule, `create_scheduled_job`) is given, with its secrets by name
only: their values are read here, from the token huggingface_hub would use, at the moment of the API call, and go
nowhere else (not into the spec, its printout, a label or the command line). The Hub's refusals are one line each
(repo.hub_errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smolconv.core.errors import SmolconvError
from smolconv.hub.repo import hub_errors, hub_token

# The one secret smolconv passes: the job publishes with it.
TOKEN_SECRET = "HF_TOKEN"
FORBIDDEN = ("the Hub refused to run a job with this token (403)",
             "Jobs need a PRO account or a paid organization, and a token with the jobs permission "
             "(https://huggingface.co/settings/tokens)")


@dataclass
class JobSpec:
    entry: str                        # what the job is for (a recipe entry)
    image: str
    command: list[str]
    flavor: str
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = (TOKEN_SECRET,)  # names; values only in the API call
    labels: dict[str, str] = field(default_factory=dict)
    timeout: str | None = None        # e.g. "3h"
    schedule: str | None = None       # cron or @hourly/@daily/@weekly/@monthly/@yearly: a scheduled job
    namespace: str | None = None      # user or organization (default: the token's user)

    def to_dict(self) -> dict:
        """The spec as `--dry-run` prints it: the secrets by name and where their values will come from."""
        return {"entry": self.entry, "image": self.image, "command": self.command, "flavor": self.flavor,
                "env": self.env, "secrets": {name: "(your Hugging Face token, given to the Hub's API only)"
                                             for name in self.secrets},
                "labels": self.labels, "timeout": self.timeout, "schedule": self.schedule,
                "namespace": self.namespace}


@dataclass
class SubmittedJob:
    entry: str
    id: str
    url: str | None
    scheduled: bool


@dataclass
class JobState:
    """One job (or scheduled job) of an entry, as `batch --status` lists it."""

    entry: str
    id: str
    stage: str                        # COMPLETED, RUNNING, ERROR, … or SCHEDULED (a schedule; its last run beside)
    flavor: str | None
    created: str | None
    url: str | None
    message: str | None = None


def submit(spec: JobSpec, *, token: str | None = None) -> SubmittedJob:
    """Run the job now, or create its schedule."""
    from huggingface_hub import HfApi

    token = token or hub_token()
    secrets = {name: _secret(name, token) for name in spec.secrets}
    kwargs = {"image": spec.image, "command": spec.command, "env": spec.env, "secrets": secrets,
              "flavor": spec.flavor, "timeout": spec.timeout, "labels": spec.labels, "namespace": spec.namespace,
              "token": token}
    api = HfApi(token=token)
    with hub_errors(spec.entry, action="submitting the job of entry", forbidden=FORBIDDEN, retry="try again later",
                    elsewhere="print the job specs only with --dry-run"):
        if spec.schedule:
            info = api.create_scheduled_job(schedule=spec.schedule, name=spec.entry, **kwargs)
        else:
            info = api.run_job(name=spec.entry, **kwargs)
    url = getattr(info, "url", None) or _url(info)
    return SubmittedJob(spec.entry, info.id, url, scheduled=bool(spec.schedule))


def job_states(labels: dict[str, str], entry_label: str, *, namespace: str | None = None,
               token: str | None = None) -> list[JobState]:
    """The jobs and scheduled jobs that carry `labels`, newest first, each named by its `entry_label` label."""
    from huggingface_hub import HfApi

    token = token or hub_token()
    api = HfApi(token=token)
    states = []
    with hub_errors("these entries", action="listing the jobs of", forbidden=FORBIDDEN, retry="try again later",
                    elsewhere="try again later"):
        jobs = list(api.list_jobs(labels=labels, namespace=namespace, token=token))
        scheduled = list(api.list_scheduled_jobs(labels=labels, namespace=namespace, token=token))
    for job in jobs:
        states.append(JobState(entry=(job.labels or {}).get(entry_label, "?"), id=job.id,
                               stage=str(job.status.stage), flavor=job.flavor, created=_when(job.created_at),
                               url=getattr(job, "url", None), message=job.status.message))
    for plan in scheduled:
        last = plan.status.last_job
        states.append(JobState(entry=(plan.job_spec.labels or {}).get(entry_label, "?"), id=plan.id,
                               stage="SCHEDULED", flavor=plan.job_spec.flavor, created=_when(plan.created_at),
                               url=None, message=f"{plan.schedule}, next run {_when(plan.status.next_job_run_at)}"
                               + (f", last job {last.id}" if last is not None else "")))
    states.sort(key=lambda s: (s.entry, s.created or ""))
    return states


def _secret(name: str, token: str) -> str:
    if name != TOKEN_SECRET:
        raise SmolconvError(f"smolconv passes only {TOKEN_SECRET} to a job, not {name}",
                            f"use {TOKEN_SECRET}, or submit the job with `hf jobs run`")
    return token


def _url(info) -> str | None:
    owner = getattr(getattr(info, "owner", None), "name", None)
    return f"https://huggingface.co/jobs/{owner}/{info.id}" if owner else None


def _when(moment) -> str | None:
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%d %H:%M") if hasattr(moment, "strftime") else str(moment)

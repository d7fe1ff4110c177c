"""`smolconv pull`: a checkpoint from the Hugging Face Hub (or a local directory) ready to convert.

Downloads go through huggingface_hub's `snapshot_download`, so the Hub cache conventions hold: `HF_HOME` /
`HF_HUB_CACHE` for where, `HF_TOKEN` or `huggingface-cli login` for gated repos (smolconv never reads,
prints or logs the token), `HF_HUB_OFFLINE=1` for cache only. Interrupted downloads resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.core.models import ALIASES
from smolconv.record.views import SourceRecord

# Only what conversion and packaging read: configs, tokenizer, weights, chat template, license and card.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model", "README.md", "LICENSE*"]
# A PEFT adapter repo: the config and the weights (a checkpoint's files beside them are not needed).
ADAPTER_PATTERNS = ["adapter_config.json", "adapter_model.safetensors", "README.md"]


@dataclass
class PullOptions:
    model: str                   # alias (256m, 500m, 2.2b), Hub id, or a local directory
    revision: str | None = None  # branch, tag or commit; None is the repo's default branch
    cache_dir: Path | None = None
    local_files_only: bool = False


@dataclass(frozen=True)
class Source:
    path: Path
    repo_id: str | None    # None for a local directory
    revision: str | None   # the commit the snapshot resolved to
    requested_revision: str | None = None
    model: str = ""        # what the user asked for: alias, Hub id or directory

    def to_record(self) -> SourceRecord:
        """The `source` entry of build.json (the file hashes are added by convert)."""
        return SourceRecord(model=self.model, repo_id=self.repo_id, revision=self.revision,
                            requested_revision=self.requested_revision, path=str(self.path.resolve()))

    @property
    def name(self) -> str:
        """The model's name for output files, as ggml-org names theirs (`SmolVLM2-2.2B-Instruct`)."""
        return self.repo_id.split("/")[-1] if self.repo_id else self.path.resolve().name


def pull_adapter(options: PullOptions) -> Source:
    """A PEFT adapter: a local directory as it is, or its config and weights from the Hub (commit recorded)."""
    path = Path(options.model).expanduser()
    if path.is_dir():
        return Source(path=path, repo_id=None, revision=None, model=options.model)
    if options.model.count("/") != 1 or options.model.startswith((".", "/", "~")):
        raise SmolconvError(f"adapter {options.model} is neither a local directory nor a Hub id",
                            "pass the directory PEFT's save_pretrained wrote, or a Hub id such as you/my-lora")
    return _snapshot(options.model, options, ADAPTER_PATTERNS)


def resolve_model(model: str) -> tuple[str | None, Path | None]:
    """(repo_id, None) for an alias or Hub id; (None, path) for an existing local directory."""
    path = Path(model).expanduser()
    if path.is_dir():
        return None, path
    if model.lower() in ALIASES:
        return ALIASES[model.lower()], None
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return model, None
    raise SmolconvError(
        f"{model} is neither a local directory nor a Hub id",
        f"pass an alias ({', '.join(ALIASES)}), a Hub id such as {ALIASES['256m']}, or a checkpoint directory",
    )


def not_on_hub(exc: Exception, repo_id: str, revision: str | None, where: str) -> SmolconvError:
    """The one-line error for huggingface_hub's RevisionNotFoundError or RepositoryNotFoundError; `where` says
    how the revision was given ("with --revision", or "as revision" in a recipe)."""
    from huggingface_hub.errors import RevisionNotFoundError

    if isinstance(exc, RevisionNotFoundError):
        return SmolconvError(f"{repo_id} has no revision {revision}", f"pass an existing branch, tag or commit {where}")
    return SmolconvError(f"{repo_id} does not exist on the Hub (or is private)",
                         "check the id, or set HF_TOKEN for a private repo")


def pull(options: PullOptions) -> Source:
    repo_id, local = resolve_model(options.model)
    if local is not None:
        return Source(path=local, repo_id=None, revision=None, model=options.model)
    return _snapshot(repo_id, options, ALLOW_PATTERNS)


def _snapshot(repo_id: str, options: PullOptions, allow_patterns: list[str]) -> Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{options.revision or 'main'}"
    try:
        path = Path(snapshot_download(
            repo_id,
            revision=options.revision,
            cache_dir=options.cache_dir,
            allow_patterns=allow_patterns,
            local_files_only=options.local_files_only,
        ))
    except GatedRepoError:
        raise SmolconvError(f"{repo_id} is gated and this machine has no access",
                            "accept its license on the Hub, then set HF_TOKEN or run `huggingface-cli login`") from None
    except (RevisionNotFoundError, RepositoryNotFoundError) as exc:
        raise not_on_hub(exc, repo_id, options.revision, "with --revision") from None
    except HFValidationError:
        raise SmolconvError(f"{repo_id} is not a valid Hub id", "use the form owner/name") from None
    except LocalEntryNotFoundError:
        # huggingface_hub raises this when the Hub is unreachable (or offline mode is on) and the cache
        # does not hold the snapshot either.
        raise SmolconvError(
            f"cannot reach the Hugging Face Hub and {where} is not in the local cache",
            "download it where the Hub is reachable (`smolconv pull` or `huggingface-cli download`) and pass the "
            "directory instead of the id",
        ) from None
    except OSError as exc:
        raise SmolconvError(f"downloading {where} failed ({type(exc).__name__})",
                            "check the network and disk space, then run the same command again: it resumes") from None
    # snapshot_download returns <cache>/models--owner--name/snapshots/<commit>.
    commit = path.name if len(path.name) == 40 else None
    return Source(path=path, repo_id=repo_id, revision=commit, requested_revision=options.revision,
                  model=options.model)

"""The Hub plumbing both publishers share: the repo's files, the token, the source and adapter a card names, the upload
and its errors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from smolconv.core.errors import SmolconvError
from smolconv.record.manifest import Manifest
from smolconv.record.origin import build_source

OFFLINE = ("HF_HUB_OFFLINE is set, so nothing can be uploaded",
           "unset HF_HUB_OFFLINE, or write the folder only with --dry-run DIR")


TOKEN_FIX = "create a token with write access at https://huggingface.co/settings/tokens, then `hf auth login`"


@dataclass
class RepoFile:
    """One file of the repo: a build file (linked into the folder), or text or bytes smolconv wrote."""

    name: str
    source: Path | None = None
    text: str | None = None
    data: bytes | None = None  # a picture smolconv drew (the card's size-against-loss PNG)

    def write(self, folder: Path) -> None:
        target = folder / self.name
        if self.text is not None:
            target.write_text(self.text)
            return
        if self.data is not None:
            target.write_bytes(self.data)
            return
        assert self.source is not None
        try:
            os.link(self.source, target)  # a GGUF can be GBs: a hard link costs nothing
        except OSError:
            shutil.copyfile(self.source, target)


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = ""
    if repo_id.count("/") != 1:
        raise SmolconvError("--repo must be USER/NAME (a Hub model repo id)",
                            "write e.g. --repo your-name/SmolVLM2-2.2B-Instruct-GGUF")


def hub_token() -> str:
    """The token huggingface_hub would use; one line with the fix when offline or there is none."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise SmolconvError(*OFFLINE)
    token = get_token()
    if not token:
        raise SmolconvError("no Hugging Face token found (HF_TOKEN or `hf auth login`)", TOKEN_FIX)
    return token


def check_publish_request(repo_id: str) -> None:
    """What `build --publish` checks before the long steps."""
    check_repo_id(repo_id)
    hub_token()


@dataclass
class SourceCard:
    name: str               # ggml-org's file name stem: the checkpoint's name (SmolVLM2-2.2B-Instruct)
    origin: str             # what the card says it was made from
    base_model: str | None
    hub_id: str | None      # the Hub repo build.json says it was pulled from (None: a local directory)
    revision: str | None
    license_id: str
    license_text: str


def source_card(manifest: Manifest, build_dir: Path, base_model: str | None) -> SourceCard:
    record = manifest.source
    checkpoint_name, origin, license_text, _ = build_source(manifest, build_dir)
    if not record.repo_id:
        origin = Path(record.path or origin).name  # a local directory: its name, not the user's file tree
    base = base_model or record.repo_id
    if base:
        check_repo_id(base)
    return SourceCard(name=base.split("/")[-1] if base else checkpoint_name, origin=origin, base_model=base,
                   hub_id=record.repo_id, revision=record.revision,
                   license_id=license_id(record.path), license_text=license_text)


def license_id(checkpoint: str | None) -> str:
    """The license id the checkpoint's own model card declares (apache-2.0 for SmolVLM2)."""
    from huggingface_hub import ModelCard

    card = Path(checkpoint or "") / "README.md"
    if checkpoint and card.is_file():
        with contextlib.suppress(Exception):  # a card without a YAML header, or one that does not parse
            license_id = ModelCard.load(card).data.license
            if isinstance(license_id, str) and license_id:
                return license_id
    return DEFAULT_LICENSE_ID


def adapter_card(manifest: Manifest) -> dict | None:
    """build.json's adapter record as the card names it: its Hub id (or only its name, never a local path),
    commit, format, and the GGUF LoRA file of the gguf format."""
    record = manifest.adapter
    if record is None or not record.format:
        return None
    return {"source": record.repo_id or record.name, "revision": record.revision,
            "format": record.format, "name": record.name, "file": record.gguf}


@contextlib.contextmanager
def upload_folder(build_dir: Path):
    """A temporary folder in the build directory, so that the GGUF files are hard links, not copies (elsewhere
    when the build directory is read-only)."""
    try:
        tmp = tempfile.TemporaryDirectory(prefix=".publish-", dir=build_dir)
    except OSError:
        tmp = tempfile.TemporaryDirectory(prefix="smolconv-publish-")
    with tmp as folder:
        yield Path(folder)


def upload(folder: Path, repo_id: str, message: str, *, private: bool, token: str) -> str:
    """Create the repo when missing and commit `folder` to it; Hub refusals become one line each."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with hub_errors(repo_id):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message=message)
    return commit.commit_url


@contextlib.contextmanager
def hub_errors(repo_id: str, *, action: str = "publishing to", forbidden: tuple[str, str] | None = None,
               retry: str = "try again later (a rerun skips the files already uploaded)",
               elsewhere: str = "write the folder only with --dry-run DIR"):
    """The Hub's answers as SmolconvErrors that name the fix (never the token, never the server's text).

    `action` and `repo_id` name what was being done ("publishing to USER/NAME", "submitting the job of entry
    NAME"); `forbidden` is the (problem, fix) of a 403 when it is not a repo the token cannot write to; `retry` the
    fix of any other refusal, `elsewhere` what to do instead when the Hub cannot be reached."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    # huggingface_hub 1.x and later talk to the Hub through httpx; older releases through requests.
    unreachable: tuple[type[BaseException], ...] = (httpx.TransportError,)
    try:
        import requests

        unreachable += (requests.ConnectionError, requests.Timeout)
    except ImportError:
        pass

    try:
        yield
    except OfflineModeIsEnabled:
        raise SmolconvError(*OFFLINE) from None
    except (HfHubHTTPError, httpx.HTTPStatusError) as exc:  # huggingface_hub 2.x lets some through as httpx's
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise SmolconvError("the Hub refused the token (401: invalid or expired)", TOKEN_FIX) from None
        if status == 403 and forbidden is not None:
            raise SmolconvError(*forbidden) from None
        if status == 403:
            raise SmolconvError(f"the token cannot write to {repo_id} (403 from the Hub)",
                                "use a token with write access to that user or organization, "
                                "or publish under your own name with --repo YOUR-NAME/…") from None
        raise SmolconvError(f"the Hub answered {status or 'an error'} while {action} {repo_id}", retry) from None
    except unreachable:
        raise SmolconvError("cannot reach huggingface.co", f"check the network, or {elsewhere}") from None


DEFAULT_LICENSE_ID = "apache-2.0"  # SmolVLM2's license, when the checkpoint's own card names none

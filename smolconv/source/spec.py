"""What a build or an export is made from: a model, its revision, and the adapter on top of it.

One type for `build` and both exports, handed to `pull_model_and_adapter`: the same checks, in the same order,
whichever format is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from smolconv.core.choices import AdapterFormat
from smolconv.source.pull import PullOptions


@dataclass(frozen=True)
class SourceSpec:
    model: str                          # alias (256m, 500m, 2.2b), Hub id, or a local directory
    revision: str | None = None         # branch, tag or commit; None is the repo's default branch
    adapter: str | None = None          # a PEFT LoRA/DoRA adapter: a directory or Hub id
    adapter_revision: str | None = None
    adapter_format: str = AdapterFormat.MERGE  # checked, with the adapter, by load_adapter
    local_files_only: bool = False

    @property
    def pull_options(self) -> PullOptions:
        return PullOptions(self.model, revision=self.revision, local_files_only=self.local_files_only)

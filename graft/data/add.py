"""`graft data add`: merge a folder of labelled images into the configured image-folder source.

Everything is checked before anything is copied (every image decodes, every class is one the source
accepts), so a bad delivery changes nothing. Files are copied under a temporary name and renamed,
so an interrupted merge never leaves a half-written image for `ingest` to trip over. An image whose
exact bytes are already in its class folder is skipped; a different image with a taken name is
renamed (`name-<hash>.ext`), never overwritten.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from graft.config import ImageFolderSource, Params
from graft.data.dataset import DataError
from graft.data.imagefolder import _class_folders, _image_files
from graft.data.images import decode_image_file
from graft.files import sha256_of


@dataclass
class MergePlan:
    destination: Path
    copies: list[tuple[Path, Path]] = field(default_factory=list)  # (from, to)
    duplicates: list[Path] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)

    @property
    def per_class(self) -> Counter:
        return Counter(dst.parent.name for _, dst in self.copies)


def destination(params: Params, root: Path, domain: str) -> Path:
    spec = getattr(params.ingest, domain)
    if not isinstance(spec, ImageFolderSource):
        raise DataError(
            f"ingest.{domain} is a {spec.kind} source; `graft data add` merges images into an image-folder "
            f"source. Point it at one first, e.g. `graft run --dry-run -S ingest.{domain}.kind=imagefolder "
            f"-S ingest.{domain}.path=data/sources/{domain}` (keep it under data/sources/ so DVC sees changes)")
    path = Path(spec.path).expanduser()
    return path if path.is_absolute() else Path(root) / path


def plan_merge(params: Params, root: Path, incoming: Path, domain: str = "target") -> MergePlan:
    """Check `incoming` (incoming/<class>/<images>) and work out what to copy where; copies nothing."""
    incoming = Path(incoming)
    dest = destination(params, root, domain)
    spec = getattr(params.ingest, domain)
    folders = _class_folders(incoming, None)
    allowed = set(spec.classes) if spec.classes is not None else None
    unknown = [f.name for f in folders if allowed is not None and f.name not in allowed]
    if unknown:
        raise DataError(f"{incoming}: classes {unknown} are not in ingest.{domain}.classes ({sorted(allowed)}); "
                        f"add them there first if the classifier should learn them")
    files = {folder.name: _image_files(folder) for folder in folders}
    bad = []
    for paths in files.values():
        for path in paths:
            try:
                decode_image_file(path, params.data.image_size, params.data.channels)
            except DataError as e:
                bad.append(str(e))
    if bad:
        raise DataError(f"{incoming}: {len(bad)} image(s) cannot be read, so nothing was added:\n  "
                        + "\n  ".join(bad) + "\nFix or remove them, then run `graft data add` again.")

    plan = MergePlan(destination=dest)
    existing_classes = {p.name for p in dest.iterdir() if p.is_dir()} if dest.is_dir() else set()
    plan.new_classes = sorted(set(files) - existing_classes) if existing_classes else []
    for cls, paths in files.items():
        known = {sha256_of(p) for p in (dest / cls).iterdir() if p.is_file()} if (dest / cls).is_dir() else set()
        taken = {p.name for p in (dest / cls).iterdir()} if (dest / cls).is_dir() else set()
        for path in paths:
            digest = sha256_of(path)
            if digest in known:
                plan.duplicates.append(path)
                continue
            name = path.name if path.name not in taken else f"{path.stem}-{digest[:8]}{path.suffix}"
            taken.add(name)
            known.add(digest)
            plan.copies.append((path, dest / cls / name))
    return plan


def apply_merge(plan: MergePlan) -> None:
    for src, dst in plan.copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.graft-tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

"""Any folder of class subfolders, with or without train/ and test/ splits (or a tar of one)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .images import read_tree, tree_signature
from .registry import Arrays, register_dataset, stratified_holdout

TEST_SHARE = 0.2
OFFLINE = (
    "Set data.root to a folder (or .tar/.tar.gz) of class folders: <root>/<class>/*.png, or "
    "<root>/train/<class>/*.png with <root>/test/<class>/*.png."
)


def _cache_key(root: str | None) -> str | None:
    if not root or not Path(root).expanduser().exists():
        return None
    return f"imagefolder|{tree_signature(Path(root).expanduser())}"


@register_dataset(
    "imagefolder", "Your own images: class subfolders, optional train/ and test/", OFFLINE, cache_key=_cache_key
)
def load_imagefolder(root: str | None, download_ok: bool, size: int | None) -> Arrays:
    if not root:
        raise DataError(f"data.name=imagefolder needs data.root. {OFFLINE}")
    base = Path(root).expanduser()
    if not base.exists():
        raise DataError(f"data.root {base} does not exist. {OFFLINE}")
    splits, classes = read_tree(base, size)
    if "all" in splits:
        # no split folders: hold out a fixed, class-stratified 20% as the test split
        x, y = splits["all"]
        test = stratified_holdout(y, TEST_SHARE, seed=0)
        return Arrays(x[~test], y[~test], x[test], y[test], classes, str(base))
    if "train" not in splits or "test" not in splits:
        raise DataError(f"{base} has {sorted(splits)} split folders; need both train/ and test/. {OFFLINE}")
    return Arrays(*splits["train"], *splits["test"], classes, str(base))

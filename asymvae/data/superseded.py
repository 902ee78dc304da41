"""Removing what a replaced dataset left in a prepare output: its shard folder and its bad-image list.

Only objects asymvae wrote are removed: the shards a previous manifest lists, the receipts of a shard
folder (`shards-<fingerprint>/<split>-<index>.json`) with the shard each names in that folder, and a
`bad-images.tsv` in asymvae's own format. Anything else in those folders (another tool's files) stays.
"""

from __future__ import annotations

import json
import logging
import re

from asymvae.data.manifest import Manifest
from asymvae.data.scan import BAD_LIST_NAME, bad_image_table
from asymvae.storage import StorageError, Store

log = logging.getLogger(__name__)

_SHARD_FOLDER = re.compile(r"shards-[0-9a-f]{16}/")
_RECEIPT = re.compile(r"(shards-[0-9a-f]{16}/)(train|val)-\d{6}\.json")


def remove_superseded(store: Store, keep: str, previous: Manifest | None, abandoned: bool, bad_list: bool) -> int:
    """Delete the dataset a new manifest replaced; returns how many objects went.

    `keep` is the new dataset's shard folder. Removed: the shards `previous` lists outside it with their
    receipts; when `abandoned`, also every other shard folder's receipts and the shards they name (what an
    interrupted prepare of another source or config left; only safe while the output is held by this run);
    when `bad_list` is False (the new dataset has no bad images), an old `bad-images.tsv` asymvae wrote.
    """
    doomed = set()
    if previous is not None:
        for shard in previous.shards:
            if _SHARD_FOLDER.match(shard.name) and not shard.name.startswith(keep + "/"):
                doomed.update((shard.name, shard.name.removesuffix(".tar") + ".json"))
    if abandoned:
        for obj in store.list("shards-"):
            receipt = _RECEIPT.fullmatch(obj.key)
            if receipt is None or receipt.group(1) == keep + "/":
                continue
            doomed.add(obj.key)
            named = _named_shard(store, obj.key)
            if named is not None and named.startswith(receipt.group(1)):
                doomed.add(named)
    if not bad_list and _is_our_bad_list(store):
        doomed.add(BAD_LIST_NAME)
    for key in sorted(doomed):
        store.delete(key)
    if doomed:
        log.info("removed %d files of the dataset this one replaced in %s", len(doomed), store.uri)
    return len(doomed)


def _named_shard(store: Store, receipt_key: str) -> str | None:
    """The shard a receipt names (None for a shard-less receipt or an unreadable one)."""
    try:
        name = json.loads(store.get(receipt_key)).get("name")
    except (ValueError, AttributeError, StorageError):
        return None
    return name if isinstance(name, str) else None


def _is_our_bad_list(store: Store) -> bool:
    """Whether `bad-images.tsv` exists and starts with the header asymvae writes."""
    if store.stat(BAD_LIST_NAME) is None:
        return False
    return store.get(BAD_LIST_NAME).startswith(bad_image_table([]))

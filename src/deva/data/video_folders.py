"""Reading the video training sets from folders: DAVIS-2017, the YouTube-VOS layout
(YouTube-VOS-2019, OVIS-VOS, MOSE, BURST train-vos) and your own videos (generic), each into
:class:`~deva.data.sample.VideoRecord` s; and the video lists of the published recipe
(:func:`load_subset`). Layouts: ``datasets/README.md``; sampling: :mod:`deva.data.video`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from deva.data.sample import VideoRecord

logger = logging.getLogger(__name__)

#: Sources read with the YouTube-VOS layout (``<root>/{JPEGImages,Annotations}/<video>``).
YOUTUBE_LAYOUT = ("ytvos", "ovis", "mose", "burst")
#: Every folder source.
FOLDER_SOURCES = ("davis", *YOUTUBE_LAYOUT, "generic")
#: Video lists of the published recipe, by source (files in ``deva/data/subsets/``).
PUBLISHED_SUBSETS: dict[str, str] = {"ytvos": "ytvos_train.txt"}

IMAGE_SUFFIXES = (".jpg", ".jpeg")
#: Frames of the generic source may also be PNGs.
GENERIC_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def scan_vos_folder(
    image_root: str | Path,
    mask_root: str | Path,
    *,
    videos: Sequence[str] | None = None,
    dataset: str = "vos",
    image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
    frame_positions: bool = False,
    prefix: str = "",
) -> list[VideoRecord]:
    """Records of ``<image_root>/<video>/*.jpg`` paired by name with ``<mask_root>/<video>/*.png``.

    ``videos`` restricts (and orders) the videos read; otherwise every sub-folder of
    ``mask_root`` is used. Videos with no frame that has both an image and a png are skipped
    with a warning. ``frame_positions`` records, in ``meta["positions"]``, the place of each
    annotated frame among all the video's frames (sorted by name), so that gaps can be counted
    in frames of the folder. Record names are ``prefix + video``.
    """
    image_root = _require_dir(Path(image_root), f"{dataset} image")
    mask_root = _require_dir(Path(mask_root), f"{dataset} annotation")
    if videos is None:
        names = sorted(p.name for p in mask_root.iterdir() if p.is_dir())
    else:
        names = list(videos)
        for name in names:
            _require_dir(image_root / name, f"{dataset} video")
            _require_dir(mask_root / name, f"{dataset} annotation")
    records = []
    skipped = []
    for name in names:
        image_dir = image_root / name
        if not image_dir.is_dir():
            skipped.append(name)
            continue
        rank = {suffix: i for i, suffix in enumerate(image_suffixes)}
        images: dict[str, Path] = {}
        for path in image_dir.iterdir():
            suffix = path.suffix.lower()
            known = images.get(path.stem)
            # the earlier suffix of image_suffixes wins (a jpg over a png of the same name)
            if suffix in rank and (known is None or rank[suffix] < rank[known.suffix.lower()]):
                images[path.stem] = path
        masks = {p.stem: p for p in (mask_root / name).iterdir() if p.suffix.lower() == ".png"}
        stems = sorted(images.keys() & masks.keys())
        if not stems:
            skipped.append(name)
            continue
        meta: dict[str, object] = {"dataset": dataset}
        if frame_positions:
            order = {stem: i for i, stem in enumerate(sorted(images))}
            meta["positions"] = tuple(order[stem] for stem in stems)
        records.append(
            VideoRecord(
                name=prefix + name,
                frame_names=tuple(stems),
                images=tuple(images[s] for s in stems),
                masks=tuple(masks[s] for s in stems),
                meta=meta,
            )
        )
    if skipped:
        logger.warning(
            "%s: skipped %d videos without paired jpg/png frames (e.g. %s)",
            dataset,
            len(skipped),
            skipped[0],
        )
    if not records:
        raise FileNotFoundError(f"{dataset}: no annotated videos found under {mask_root}")
    return records


def davis_records(root: str | Path, *, split: str | None = "train") -> list[VideoRecord]:
    """DAVIS-2017 videos of ``split`` (``ImageSets/2017/<split>.txt``; ``None`` = all)."""
    root = _require_dir(Path(root), "DAVIS")
    videos = None
    if split is not None:
        listing = root / "ImageSets" / "2017" / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"DAVIS split list not found: {listing}")
        videos = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return scan_vos_folder(
        root / "JPEGImages" / "480p",
        root / "Annotations" / "480p",
        videos=videos,
        dataset="davis",
    )


def youtube_records(root: str | Path, *, dataset: str = "ytvos") -> list[VideoRecord]:
    """Videos in the YouTube-VOS layout (YouTube-VOS-2019 train, OVIS-VOS, MOSE train, BURST
    train-vos): ``<root>/{JPEGImages,Annotations}/<vid>``."""
    root = _require_dir(Path(root), dataset)
    return scan_vos_folder(root / "JPEGImages", root / "Annotations", dataset=dataset)


def generic_records(roots: str | Path | Sequence[str | Path]) -> list[VideoRecord]:
    """Your own videos: ``<root>/JPEGImages/<video>/*.jpg|png`` with
    ``<root>/Annotations/<video>/*.png`` for each root, any subset of frames annotated.

    Clips are drawn from the annotated frames only; their gaps are counted in frames of the
    folder (``meta["positions"]``). With several roots, record names are ``<root name>/<video>``.
    """
    folders = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if not folders:
        raise ValueError("generic: give at least one folder")
    records: list[VideoRecord] = []
    for folder in folders:
        root = _require_dir(Path(folder), "generic")
        records += scan_vos_folder(
            root / "JPEGImages",
            root / "Annotations",
            dataset="generic",
            image_suffixes=GENERIC_IMAGE_SUFFIXES,
            frame_positions=True,
            prefix=f"{root.name}/" if len(folders) > 1 else "",
        )
    return records


def load_subset(key: str, subset: str) -> list[str]:
    """The video names of a subset: ``published`` (the list of the published recipe for
    source ``key``) or a text file with one name per line."""
    if subset == "published":
        if key not in PUBLISHED_SUBSETS:
            raise ValueError(
                f"{key}: the published recipe has no video list for this source (sources "
                f"with one: {', '.join(PUBLISHED_SUBSETS)}); use subset=null or a file"
            )
        text = resources.files("deva.data").joinpath("subsets", PUBLISHED_SUBSETS[key])
        lines = text.read_text(encoding="utf-8").splitlines()
    else:
        path = Path(subset)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: subset list not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise ValueError(f"{key}: the subset list {subset} names no video")
    return names


def keep_subset(records: list[VideoRecord], names: Sequence[str], key: str) -> list[VideoRecord]:
    """The records named in ``names`` (a folder may lack some of them: counted in a log line;
    none left is an error)."""
    wanted = set(names)
    kept = [record for record in records if record.name in wanted]
    if not kept:
        raise ValueError(
            f"{key}: none of the {len(records)} videos found is in the subset list "
            f"({len(wanted)} names, e.g. {sorted(wanted)[0]}); set data.sources.{key}.subset=null "
            "to use them all"
        )
    missing = len(wanted - {record.name for record in records})
    logger.info(
        "%s: %d of %d videos in the subset list (%d listed names not in the folder)",
        key,
        len(kept),
        len(records),
        missing,
    )
    return kept


def records_for(
    key: str, root: str | Path | Sequence[str | Path], *, subset: str | None = None
) -> list[VideoRecord]:
    """Records of a named video source: ``davis``, ``ytvos``, ``ovis``, ``mose``, ``burst`` or
    ``generic`` (a folder or a list of folders), restricted to a ``subset`` list if given
    (see :class:`SourceOptions`)."""
    if key == "generic":
        records = generic_records(root)
    elif not isinstance(root, (str, Path)):
        raise ValueError(f"{key}: expected one folder, got {root!r} (only generic takes a list)")
    elif key == "davis":
        records = davis_records(root)
    elif key in YOUTUBE_LAYOUT:
        records = youtube_records(root, dataset=key)
    else:
        raise ValueError(
            f"unknown video dataset {key!r}; expected one of {', '.join(FOLDER_SOURCES)}"
        )
    if subset is None:
        return records
    return keep_subset(records, load_subset(key, subset), key)

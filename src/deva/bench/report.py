"""The Markdown table of a benchmark result: timed rows, then the mask checks."""

from __future__ import annotations


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


#: Short names of the propagation row's parts (``ms_by_part``), in the note.
_PART_NAMES = {
    "encode_image": "pixel",
    "project_key": "key",
    "memory_read": "read",
    "segment": "decoder",
    "encode_mask": "mask enc.",
    "other": "other",
}


def _parts(ms: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms[k]:.0f}" for k, name in _PART_NAMES.items() if k in ms)


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "FAIL"


def format_table(result: dict) -> str:
    """A Markdown table of the timed rows followed by the mask checks."""
    lines = [
        "| suite | preset | variant | frame | frames/s | ms/frame | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        suite = row["suite"]
        if suite in ("propagation", "tracker"):
            note = f"peak {row['peak_mib']:.0f} MiB" if "peak_mib" in row else ""
            if "ms_by_part" in row:
                note += "; ms: " + _parts(row["ms_by_part"])
            if suite == "tracker":
                share = row.get("share", {})
                note = f"alignment {100 * share.get('align_segmentations', 0):.0f} %"
            lines.append(
                f"| {suite} | {row['preset']} ({row['weights']}) | {row['variant']} | "
                f"{row['frame']} | {row['fps']:.2f} | {row['ms_per_frame']:.0f} | {note} |"
            )
        elif suite == "backends":
            timed = "fps" in row
            lines.append(
                f"| backends | {row['backend']} | {row['model']} | {row['frame']} | "
                + (f"{row['fps']:.2f} | {row['ms_per_frame']:.0f} | " if timed else "- | - | ")
                + (f"{row['parameters'] / 1e6:.1f} M parameters |" if timed else "|")
            )
        elif suite == "consensus":
            lines.append(
                f"| consensus | - | - | {row['frame']} | - | {row['ms_median']:.1f} | "
                f"{row['proposals']} proposals |"
            )
        elif suite == "memory" and row.get("measure") == "peak_rss":
            lines.append(
                f"| peak RSS {row['mode']} | {row['preset']} | {row['variant']} | {row['frame']} | "
                "- | - | "
                f"peak {row['peak_rss_mib']:.0f} MiB (before the first frame "
                f"{row['rss_before_mib']:.0f}) |"
            )
        elif suite == "memory" and row.get("measure") == "rss_by_length":
            lines.append(
                f"| peak RSS {row['mode']} | {row['preset']} | {row['frames']} frames | "
                f"{row['frame']} | {row['frames'] / row['seconds']:.1f} | "
                f"{1000 * row['seconds'] / row['frames']:.1f} | "
                f"peak {row['peak_rss_mib']:.0f} MiB |"
            )
        elif suite == "memory":
            flat = row["flatness"]
            note = f"full at frame {flat.get('saturated_at_frame')}"
            if "rss_max_mib" in flat:
                note += (
                    f"; after: RSS {flat['rss_min_mib']:.0f}-{flat['rss_max_mib']:.0f} MiB, "
                    f"elements {flat['elements_min']}-{flat['elements_max']}"
                )
            lines.append(
                f"| memory | {row['preset']} | {row['frames']} frames | {row['frame']} | "
                f"{row['fps']:.1f} | {1000 / row['fps']:.1f} | {note} |"
            )
        elif suite == "data":
            lines.append(
                f"| data {row['source']} | {row['workers']} workers | batch {row['batch']}x"
                f"{row['clip_frames']} | {row['crop']} from {row['video']} | "
                f"{row['samples_per_s']:.2f} samples/s | "
                f"{row['samples_per_s_per_worker']:.2f} per worker | "
                + (
                    f"{100 * row['data_wait_fraction']:.0f} % waiting for data |"
                    if "data_wait_fraction" in row
                    else "|"
                )
            )
        elif suite == "training":
            lines.append(
                f"| training | {row['preset']} | batch {row['batch']}x{row['clip_frames']} | "
                f"{row['crop']} | {row['samples_per_s']:.2f} samples/s | "
                f"{1000 * row['step_s']:.0f} ms/step | |"
            )
    if result["checks"]:
        lines += [
            "",
            "| suite | preset | variant vs reference | pixels differ | decisive differ | "
            "mean object IoU | check |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in result["checks"]:
            lines.append(
                f"| {c['suite']} | {c['preset']} ({c['weights']}) | {c['variant']} | "
                f"{c['pixels_differ']} ({c['pixels_differ_pct']:.4f} %) | "
                f"{c['decisive_pixels_differ']} ({c['decisive_pixels_differ_pct']:.4f} %) | "
                f"{c['mean_object_iou']:.4f} (decisive {_number(c['decisive_mean_object_iou'])}) | "
                f"{_verdict(c['passed'])}: {c['rule']} |"
            )
    return "\n".join(lines)

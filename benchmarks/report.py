"""The report: the table, the targets checked against one run, and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _floor(case: str) -> str | None:
    """The floor a case is compared with: one of the same store, if it has one."""
    if case.startswith(("redis", "telebot redis")):
        return "redis floor"
    if case.startswith(("disk", "diskcache", "telebot pickle")):
        return "disk floor"
    return None  # telebot's memory storage has no store to compare with


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of the benchmark issue, each with the figure measured in this run."""
    single = results["single"]
    sizes = sorted(single)
    small, middle, large = sizes[0], sizes[min(1, len(sizes) - 1)], sizes[-1]
    at = single[middle]
    found = [
        _target(
            f"disk, changed session: at most 1.1x the floor (a diskcache with tgsession's "
            f"settings: get + json + set) at {middle:,} sessions",
            at["disk changed"] / at["disk floor"],
            1.1,
        ),
        _target(
            f"the same, against a bare diskcache with its defaults (eviction off) at "
            f"{middle:,} sessions",
            at["disk changed"] / at["diskcache defaults"],
            1.1,
        ),
        _target(
            f"disk, read-only session: below the disk floor at {middle:,} sessions",
            at["disk read_only"] / at["disk floor"],
            1.0,
            strict=True,
        ),
        *_typed_targets(results["independent"]),
        _target(
            "lazy session left untouched: under 3 us per call",
            results["independent"]["lazy untouched"],
            3.0,
            unit="us",
            strict=True,
        ),
        _target(
            f"flat: a changed disk session at {large:,} sessions within 1.2x of {small:,} "
            f"(the bare store's own floor grows "
            f"{single[large]['disk floor'] / single[small]['disk floor']:.2f}x)",
            single[large]["disk changed"] / single[small]["disk changed"],
            1.2,
        ),
        _target(
            f"peak RSS at {large:,} sessions within 1.1x of {small:,}",
            results["rss_kib"][large] / results["rss_kib"][small],
            1.1,
        ),
        *_isolate_targets(results),
        _target(
            "no lost updates for tgsession, 8 threads on one counter",
            sum(n for name, n in results["lost"].items() if name.startswith("tgsession")),
            0,
            unit="lost",
        ),
    ]
    if "redis floor" in at:
        found.insert(
            5,
            _target(
                f"Redis, changed session: at most 1.3x the Redis floor at {middle:,} sessions",
                at["redis changed"] / at["redis floor"],
                1.3,
            ),
        )
    return found


def _typed_targets(independent: dict[str, float]) -> list[dict[str, Any]]:
    if "memory dataclass read_only" not in independent:  # results of an earlier suite
        return []
    return [
        _target(
            "dataclass session, changed: at most 1.3x a dict session (MemoryStorage)",
            independent["memory dataclass changed"] / independent["memory changed"],
            1.3,
        ),
        _target(
            "dataclass session, read-only: at most 2 us above a dict session (MemoryStorage)",
            independent["memory dataclass read_only"] - independent["memory read_only"],
            2.0,
            unit="us",
        ),
    ]


def _isolate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = results.get("isolate")
    if found is None:  # results of a run before isolate() existed
        return []
    return [
        _target(
            "isolate(bot): at most 5 us per update in one process",
            found["dispatch isolated"] - found["dispatch plain"],
            5.0,
            unit="us",
        ),
        _target(
            f"isolate(bot): other users' latency while one floods, at most one update "
            f"({found['update ms']:.0f} ms) above the unflooded figure",
            found["latency flooded ms"] - found["latency ms"],
            found["update ms"],
            unit="ms",
        ),
    ]


def _target(
    name: str, value: float, limit: float, unit: str = "x", strict: bool = False
) -> dict[str, Any]:
    met = value < limit if strict else value <= limit
    return {"target": name, "value": round(value, 3), "limit": limit, "unit": unit, "met": met}


def print_report(results: dict[str, Any]) -> None:
    single = results["single"]
    sizes = sorted(single)
    rounds = "quick" if results["mode"] == "quick" else "full"
    print(
        f"\ntgsession benchmarks ({rounds} run, {results['seconds']} s; "
        f"Python {results['machine']['python']}, {results['machine']['cpus']} CPUs)"
    )
    print("\nOne thread, microseconds per update (median of rounds); in brackets, the ratio to")
    print("the floor of the same store: a bare get + decode + change + encode + set (for disk,")
    print("on a diskcache with tgsession's settings; 'diskcache defaults' is one with its own)\n")
    print(f"{'case':<22}" + "".join(f"{size:>24,}" for size in sizes))
    for case in single[sizes[0]]:
        cells = []
        for size in sizes:
            value = single[size][case]
            floor = _floor(case)
            ratio = "" if floor in (None, case) else f" ({value / single[size][floor]:,.2f}x)"
            cells.append(f"{value:>12,.1f}{ratio:>12}")
        print(f"{case:<22}" + "".join(cells))
    independent = results["independent"]
    for case, value in independent.items():
        base = case.replace(" dataclass", "")
        note = f"({value / independent[base]:.2f}x {base})" if base != case else ""
        print(f"{case:<28}{value:>7.2f}   {note or '(no store involved)'}")
    imports = results.get("import ms")
    if imports:
        print(
            f"\nimport tgsession {imports['tgsession']:.1f} ms (msgspec alone "
            f"{imports['msgspec']:.1f} ms), in a new interpreter"
        )

    print("\nThreads and processes, wall-time microseconds per update\n")
    print(f"{'case':<42}{'tgsession':>11}{'floor':>11}{'ratio':>9}")
    concurrency = results["concurrency"]
    for name, value in concurrency.items():
        if name.endswith(" tgsession"):
            base = name[: -len(" tgsession")]
            floor = concurrency[base + " floor"]
            print(f"{base:<42}{value:>11.1f}{floor:>11.1f}{value / floor:>8.2f}x")

    print("\nLost updates: 8 threads increment one counter, expected total minus stored total\n")
    for name, lost in results["lost"].items():
        print(f"{name:<22}{lost:>8}")

    found = results.get("isolate")
    if found is not None:
        print("\nisolate(bot): a bot's whole dispatch of one update, microseconds; the latency")
        print("of other users' updates (dispatch to handler start), with and without one user")
        print("flooding 2,000 updates; each update takes the handler one update's time\n")
        print(f"{'dispatch plain':<34}{found['dispatch plain']:>9.1f} us")
        print(f"{'dispatch isolated':<34}{found['dispatch isolated']:>9.1f} us")
        print(f"{'latency, no flood':<34}{found['latency ms']:>9.2f} ms")
        print(f"{'latency, one user flooding':<34}{found['latency flooded ms']:>9.2f} ms")

    print("\nPeak RSS of a process making updates, by number of stored sessions\n")
    smallest = results["rss_kib"][sizes[0]]
    for size, kib in results["rss_kib"].items():
        print(f"{size:>12,} sessions {kib / 1024:>8.1f} MiB ({kib / smallest:.2f}x)")

    command = results.get("command")
    if command:
        print(f"\nThe tgsession command on {command['sessions']:,} sessions, each a process\n")
        for name, value in command.items():
            if name != "sessions":
                unit = "sessions/s" if name.endswith("per s") else ""
                print(f"{name:<28}{value:>12,.1f} {unit}")

    print("\nTargets\n")
    for target in results["targets"]:
        mark = "met " if target["met"] else "MISS"
        print(f"[{mark}] {target['target']}: {target['value']} {target['unit']}")


def chart(results: dict[str, Any], path: Path) -> bool:
    """Draw the cost per update against the number of stored sessions; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[dev]'): no chart")
        return False
    single = results["single"]
    sizes = sorted(single)
    series = [
        ("telebot StatePickleStorage", "telebot pickle", "tab:red", "-"),
        ("tgsession, DiskStorage", "disk changed", "tab:blue", "-"),
        ("diskcache floor, tgsession's settings", "disk floor", "tab:blue", ":"),
        ("diskcache floor, its defaults", "diskcache defaults", "tab:gray", ":"),
        ("tgsession, RedisStorage", "redis changed", "tab:green", "-"),
        ("Redis floor (GET + SET)", "redis floor", "tab:green", ":"),
    ]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, case, color, style in series:
        if case in single[sizes[0]]:
            values = [single[size][case] for size in sizes]
            axes.plot(sizes, values, style, marker="o", color=color, label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("stored sessions")
    axes.set_ylabel("microseconds per update (median)")
    axes.set_title("Cost of one session update against the number of stored sessions")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True

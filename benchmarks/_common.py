"""Shared helpers for the benchmark scripts (timing, medians, the table)."""
import statistics
import time

__all__ = ["median_rate", "print_table", "timed"]


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def median_rate(fn, nbytes, runs):
    """Run *fn* *runs* times; return the median throughput in MB/s (1e6 bytes)."""
    rates = [nbytes / timed(fn) / 1e6 for _ in range(runs)]
    return statistics.median(rates)


def print_table(title, header, rows):
    """Print rows (lists of cells) under *header* as an aligned text table."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(title)
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print()

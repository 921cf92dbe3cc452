"""pyarrow writing the same readings Arrow data as benches/writer_readings.rs, with the
same settings (zstd level 3, row groups of 1,000,000 rows, page statistics and page
index, declared sorting columns), on one core: the baseline for the writer's rows/s and
bytes per row.

Why: a writer number alone says little; set beside the reference Parquet implementation
writing identical data on the same machine in the same run, it shows what Feeder's
encode path costs. Run `cargo bench -p feeder-benches --bench writer_readings` first: it
leaves the Arrow data in $FEEDER_BENCH_READINGS (default: <tmp>/feeder-bench-readings.parquet).

Feeder's settings row also writes the same bloom filter on device_id (pyarrow >= 19's
bloom_filter_options, sized like Feeder's: ndv = the distinct devices, fpp 0.01), so both
sides do the same work. The last line, `pyarrow best Mrows/s (feeder's settings): X`, is
what benches/writer_readings.rs reads when it runs this script in its own run.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main() -> int:
    path = os.environ.get(
        "FEEDER_BENCH_READINGS", os.path.join(tempfile.gettempdir(), "feeder-bench-readings.parquet")
    )
    if not os.path.exists(path):
        print(f"{path} not found: run the writer_readings bench first", file=sys.stderr)
        return 2
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    table = pq.read_table(path)
    table = table.combine_chunks()
    names = table.schema.names
    sorting = [pq.SortingColumn(names.index("device_id")), pq.SortingColumn(names.index("ts"))]

    # pyarrow's default (a dictionary on every column), and Feeder's choice: no dictionary
    # on the columns whose values are nearly all distinct (parquet_file.rs no_dictionary)
    feeder_plain = {"value", "value_raw"}
    # parquet_file.rs: a bloom filter on device_id sized to the distinct devices, fpp 0.01
    bloom = {"device_id": {"ndv": max(1, len(pc.unique(table["device_id"]))), "fpp": 0.01}}
    settings = [
        ("defaults", True, None),
        ("feeder's settings", [n for n in names if n not in feeder_plain], bloom),
    ]
    rows = table.num_rows
    print(f"pyarrow {pa.__version__}: {rows} rows")
    best = 0.0
    for label, use_dictionary, bloom_filter in settings:

        def write() -> int:
            sink = io.BytesIO()
            pq.write_table(
                table,
                sink,
                compression="zstd",
                compression_level=3,
                row_group_size=1_000_000,
                write_statistics=True,
                write_page_index=True,
                sorting_columns=sorting,
                use_dictionary=use_dictionary,
                bloom_filter_options=bloom_filter,
            )
            return sink.tell()

        size = write()  # warm-up
        runs = []
        deadline = time.perf_counter() + 5.0
        while time.perf_counter() < deadline or len(runs) < 10:
            t = time.perf_counter()
            write()
            runs.append(time.perf_counter() - t)
        runs.sort()
        median = runs[len(runs) // 2]
        print(
            f"pyarrow encode ({label}): {size} bytes, {size / rows:.2f} bytes/row; "
            f"median {median * 1e3:.2f} ms over {len(runs)} runs, "
            f"{rows / median / 1e6:.3f} Mrows/s (best {rows / runs[0] / 1e6:.3f} Mrows/s)"
        )
        best = rows / runs[0] / 1e6
    print(f"pyarrow best Mrows/s (feeder's settings): {best:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writing simulated tables as deterministic Parquet, and the run summary shown by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def write_frame(df: pd.DataFrame | pa.Table, path: Path) -> None:
    """One file, no pandas index; pyarrow's output is byte-stable for the same data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, path, compression="zstd")


class BlockWriter:
    """Append blocks of one table as row groups, so big tables never sit in memory whole."""

    def __init__(self, path: Path):
        self.path = path
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table.cast(self.writer.schema), row_group_size=1 << 20)
        self.rows += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class DayPartitionWriter:
    """Append blocks of trips as a hive-partitioned dataset, one folder per UTC day of ``column``:
    ``FOLDER/date=YYYY-MM-DD/part-N.parquet`` (the layout data lakes write; both engines read it).

    Each block is split by day and written at once, so memory is bounded by a block whatever the size of
    the platform; a day seen in a later block again gets the next part number.
    """

    def __init__(self, folder: Path, column: str = "requested_at"):
        self.folder, self.column = folder, column
        self.parts: dict[str, int] = {}
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        days = pc.strftime(table[self.column], format="%Y-%m-%d", locale="C")
        for day in pc.unique(days).to_pylist():
            number = self.parts.get(day, 0)
            self.parts[day] = number + 1
            path = self.folder / f"date={day}" / f"part-{number}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.filter(pc.equal(days, day)), path, compression="zstd")
        self.rows += table.num_rows

    def close(self) -> None:
        """Nothing stays open between blocks."""


@dataclass
class SimulationSummary:
    """What a simulation wrote: rows per table, the folder, and how long it took."""

    preset: str
    seed: int
    out: Path | None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def render(self):
        """A rich Table of rows per table (truth files included)."""
        from rich.table import Table

        where = f"written to {self.out} in " if self.out else ""
        table = Table(
            "table",
            "rows",
            title=f"simulated {self.preset} (seed {self.seed})",
            caption=f"{where}{self.seconds:.1f} s",
        )
        for name, count in self.counts.items():
            table.add_row(name, f"{count:,}")
        return table

"""Writing simulated tables as deterministic Parquet, and the run summary shown by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
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

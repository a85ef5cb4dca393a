"""``make demo``: the whole job end to end on simulated data, with embedded defaults and no servers.

simulate → validate → build both training frames → materialize the online store → train, register and
promote both models → policy reports → zone risk map → how to start the service, with a working curl.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from safetyml.tasks import INCIDENT_RISK, TASKS

console = Console()


def _step(title: str) -> float:
    console.print(Rule(f"[bold]{title}"))
    return time.perf_counter()


def _done(started: float) -> None:
    console.print(f"[dim]  … {time.perf_counter() - started:.1f} s[/]")


def run(data: Path, preset: str, seed: int, trials: int) -> None:
    from safetyml import paths

    home = paths.home()
    console.print(f"SAFETYML_HOME = {home}\ndata          = {data.resolve()}")

    started = _step(f"1. Simulate the platform ({preset} preset, seed {seed})")
    if (data / "trips.parquet").exists():
        console.print(f"  {data} already holds a simulation; reusing it (delete it to simulate again)")
    else:
        from safetyml.simulate import simulate

        console.print(simulate(data, preset=preset, seed=seed).render())
    _done(started)

    started = _step("2. Validate the tables against the data contract")
    from safetyml.tables import load_tables

    tables = load_tables(data)
    for name, df in tables.items():
        console.print(f"  {name:<16} {len(df):>10,} rows valid")
    _done(started)

    started = _step("3. Build the point-in-time training frames")
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.frames import build_frame

    feature_set = load_feature_set()
    frames_dir = home / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        frame = build_frame(task, tables, feature_set)
        frame.to_parquet(frames_dir / f"{task}.parquet", index=False)
        console.print(
            f"  {task:<16} {len(frame):>10,} rows, {int(frame['label'].sum()):,} positives → "
            f"{frames_dir / f'{task}.parquet'}"
        )
    _done(started)

    started = _step("4. Materialize the online store")
    from safetyml.features.online import materialize

    console.print(f"  {materialize(tables, feature_set)}")
    _done(started)

    started = _step(f"5. Train, register and promote both models ({trials} Optuna trials each)")
    from safetyml.training.pipeline import train
    from safetyml.training.promote import promote

    for task in TASKS:
        result = train(task, data, trials=trials, seed=seed)
        console.print(result.render())
        console.print(f"  promotion: {promote(task, data).render()}")
    _done(started)

    started = _step("6. Policy review reports (SHAP)")
    from safetyml.explain.report import write_report

    for task in TASKS:
        out = home / "reports" / f"{task}.html"
        write_report(task, data, out)
        console.print(f"  {task:<16} → {out}")
    _done(started)

    started = _step("7. Zone risk map of the last week")
    from safetyml.batch.zones import score_zones

    zones_dir = home / "zones"
    console.print(
        score_zones(
            data, as_of=None, window="7d", out=zones_dir, features=frames_dir / f"{INCIDENT_RISK}.parquet"
        )
    )
    _done(started)

    _step("8. Real-time scoring")
    from safetyml.scoring.examples import example_curl

    console.print("Start the service (loopback only while SAFETYML_API_TOKEN is unset):")
    console.print("  .venv/bin/safetyml serve --port 3000", markup=False)
    console.print("then, in another terminal:")
    console.print(example_curl(port=3000), markup=False, soft_wrap=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/medium"))
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    started = time.perf_counter()
    run(args.data, args.preset, args.seed, args.trials)
    console.print(Rule(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s"))


if __name__ == "__main__":
    main()

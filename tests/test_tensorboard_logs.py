"""Live curves: train writes each epoch's history row as TensorBoard scalars in fold<k>/logs (TensorBoard's event
format, read back here with TensorFlow's own record reader and protos, as TensorBoard reads them)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def read_scalars(logs: Path) -> dict[int, dict[str, float]]:
    """{step: {tag: value}} over every event file in `logs`, in file order."""
    import tensorflow as tf
    from tensorflow.core.util.event_pb2 import Event
    steps: dict[int, dict[str, float]] = {}
    for path in sorted(logs.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = Event.FromString(record.numpy())
            for value in event.summary.value:
                steps.setdefault(event.step, {})[value.tag] = value.simple_value
    return steps


def test_each_epoch_of_history_is_a_step_of_scalars(trained_run):
    history = pd.read_csv(trained_run / "fold0" / "history.csv")
    files = list((trained_run / "fold0" / "logs").glob("events.out.tfevents.*"))
    assert files, "train wrote no TensorBoard event file beside history.csv"
    steps = read_scalars(trained_run / "fold0" / "logs")
    assert sorted(steps) == history["epoch"].tolist()
    for _, row in history.iterrows():
        got = steps[int(row["epoch"])]
        assert set(got) == set(history.columns) - {"epoch"}
        for tag, value in got.items():
            assert value == pytest.approx(row[tag], rel=1e-6, abs=1e-7), (int(row["epoch"]), tag)

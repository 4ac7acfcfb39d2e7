"""The retraining project of tests/integration/test_retrain.py: trains a scikit-learn model
on the rows of a PostgreSQL table and logs it with its accuracy.

How well it trains is read from ``apps.retrain_config`` (``quality``), so the test can make
the next challenger better, worse or failing without changing the schedule: ``good`` trains
on the labels, ``bad`` on shuffled labels, ``fail`` stops with an error, ``hang`` starts a
child process and both wait (for a test that kills the worker meanwhile).
"""

import argparse
import os
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy
from sklearn.linear_model import LogisticRegression

parser = argparse.ArgumentParser()
parser.add_argument("--db-url", required=True)
parser.add_argument("--table", required=True)
args = parser.parse_args()

engine = sqlalchemy.create_engine(args.db_url)
with engine.connect() as conn:
    quality = conn.execute(sqlalchemy.text("SELECT quality FROM apps.retrain_config")).scalar()
    frame = pd.read_sql(sqlalchemy.text(f"SELECT x1, x2, y FROM {args.table} ORDER BY id"), conn)
print(f"logging to MLflow as {os.environ.get('MLFLOW_TRACKING_USERNAME')}")
print(f"training on {len(frame)} rows of {args.table} (quality {quality})")
if quality == "hang":
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("hanging", flush=True)
    time.sleep(600)
if quality == "fail":
    print("TrainingDataError: the label column holds no positive row", file=sys.stderr)
    sys.exit(3)

features, labels = frame[["x1", "x2"]], frame["y"].to_numpy()
if quality == "bad":
    labels = np.random.default_rng(7).permutation(labels)
model = LogisticRegression().fit(features, labels)
accuracy = float((model.predict(features) == frame["y"].to_numpy()).mean())
with mlflow.start_run():
    mlflow.log_metric("accuracy", accuracy)
    # Named requirements: inferring them runs the model in a subprocess (tens of seconds).
    mlflow.sklearn.log_model(
        model, name="model", input_example=features.head(5), pip_requirements=["scikit-learn"]
    )
print(f"accuracy {accuracy:.4f}")
